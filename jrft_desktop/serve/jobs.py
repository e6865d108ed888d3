"""The work a request hands the engine: texts to read (`PredictJob`: a task's outputs, or embeddings) or an answer
to generate (`GenerationJob`). The engine calls a job's callbacks from its own thread; the routes turn them into
responses (app.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..core.config import Decoding
from .bank import Vector

# (the batch's last hidden states of this job's rows, their attention mask, their token ids, their encoded rows)
# -> one output per row
ReadOut = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Sequence[dict]], Sequence]


@dataclass(eq=False)
class PredictJob:
    """Encoded rows of one vector to run through the model; `on_done(outputs, error)` once all are read."""

    vector: Vector
    rows: list[dict]
    read_out: ReadOut
    on_done: Callable[[list | None, Exception | None], None]
    outputs: list = field(default_factory=list)
    submitted: float = field(default_factory=time.perf_counter)
    failed: bool = False

    def __post_init__(self) -> None:
        self.outputs = [None] * len(self.rows)
        self.left = len(self.rows)

    def finish_rows(self, indices: Sequence[int], outputs: Sequence) -> None:
        for index, output in zip(indices, outputs):
            self.outputs[index] = output
        self.left -= len(indices)
        if self.left == 0 and not self.failed:
            self.on_done(self.outputs, None)

    def fail(self, error: Exception) -> None:
        if not self.failed:
            self.failed = True
            self.on_done(None, error)


@dataclass(eq=False)
class GenerationJob:
    """One answer to generate, token by token: `on_token(token)` after each (True: stop there, e.g. a stop string)
    and `on_done(finish reason, error)` at the end ('stop', 'length', 'cancelled' or 'error')."""

    vector: Vector
    prompt_ids: list[int]
    options: Decoding  # max_new_tokens, temperature, top_p, seed, as `generate.generate_ids` reads them
    stop_ids: frozenset[int]
    on_token: Callable[[int], bool]
    on_done: Callable[[str, Exception | None], None]
    tokens: list[int] = field(default_factory=list)
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # set by the route when its client went away; the row leaves at the next step
