"""Predicting and scoring with a model in hand: the device to run on, batched logits in input order, metrics, and
`Predictor`, a trained model that answers examples (one plain record each, in the form its task gives).

The trainer, `jrft eval` / `jrft predict` / `jrft demo`, the desktop app and the bench all go through here."""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .train import distributed
from .train import precision as precisions
from .errors import UserError
from .models import JrftModel

if TYPE_CHECKING:
    from .export.vector import Restored


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UserError(f"Unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA was requested but no CUDA GPU is available here; use --device cpu or auto.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"There is no {requested}; this machine has {torch.cuda.device_count()} CUDA device(s).")
    return device


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


@torch.no_grad()
def predict_logits(model: JrftModel, encoder, rows: Sequence[dict], device: torch.device, batch_size: int = 64,
                   precision: str = "fp32"):
    """The model's outputs for the rows, in order, as its task joins them (`Task.join_outputs`; a pooled head's: one
    [rows, labels] array); computed in `precision` (a resolved one: 'fp32', 'bf16' or 'fp16', see precision.py)."""
    model.eval()
    task = model.task
    outputs: list = [None] * len(rows)
    # Batches of similar length pad far less (dev sets mix short and long sentences); results go back in order.
    lengths = task.row_lengths(rows)
    order = sorted(range(len(rows)), key=lengths.__getitem__)
    autocast = precisions.autocast(precision, device)
    for start in range(0, len(order), batch_size):
        picked = order[start:start + batch_size]
        batch = [rows[i] for i in picked]
        inputs = {k: v.to(device) for k, v in encoder.collate(batch).items()}
        with autocast or contextlib.nullcontext():
            computed = model(**inputs)
        for index, output in zip(picked, task.row_outputs(computed.float().cpu().numpy(), batch)):
            outputs[index] = output
    return task.join_outputs(outputs, model.head.out_features)


def evaluate(model: JrftModel, encoder, rows: Sequence[dict], labels: Sequence, problem: str, device: torch.device,
             processes: distributed.Processes = distributed.Processes(), label_names=None,
             precision: str = "fp32") -> dict:
    """Metrics on the labelled rows, computed in `precision` (resolved); the processes of a data-parallel run each
    score their part."""
    scored = model.task.score_rows(model, encoder, rows, device, processes, precision)
    if scored is not None:
        return scored
    logits = processes.gather(predict_logits(model, encoder, processes.share(rows), device, precision=precision))
    return model.task.metrics(problem, labels, logits, label_names)


@dataclass(frozen=True)
class Evaluation:
    metrics: dict
    examples: int
    truncated: int  # what the run's max length cut (the task's count: texts, or words of a tagger)


class Predictor:
    """A trained model that answers its task's examples: on its device, in batches, in input order.

    `Predictor.from_restored(export.restore(vector_file))`, or `Predictor(model, encoder, metadata)` with the
    metadata of a vector file (its label names and task)."""

    def __init__(self, model: JrftModel, encoder, metadata: dict, device: str | torch.device = "auto",
                 batch_size: int = 64):
        self.model, self.encoder, self.metadata, self.batch_size = model, encoder, metadata, batch_size
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        # scores reproduce the run's own (computed in its precision); predictions are exact float32, as every merged
        # form computes them
        self.precision = precisions.replay(metadata.get("precision", "fp32"), self.device)
        model.to(self.device)

    @classmethod
    def from_restored(cls, restored: Restored, device: str | torch.device = "auto",
                      batch_size: int = 64) -> Predictor:
        return cls(restored.model, restored.encoder, restored.metadata, device, batch_size)

    @property
    def label_names(self) -> tuple[str, ...] | None:
        names = self.metadata["label_names"]
        return tuple(names) if names else None

    @property
    def problem(self) -> str:
        """The run's data problem: 'classification' or 'regression' (the vector metadata's `task`)."""
        return self.metadata["task"]

    def logits(self, examples) -> np.ndarray:
        rows, _ = self.model.task.encode(self.encoder, examples)
        return predict_logits(self.model, self.encoder, rows, self.device, self.batch_size)

    def predict(self, examples, options=None, on_text=None) -> list[dict]:
        """The task's record for each example, in order: generated (`Task.predict_records`, with `options`, a
        `config.Decoding`, and `on_text(new text)` as an answer grows) or from the outputs
        (`Task.prediction_records`)."""
        generated = self.model.task.predict_records(self, examples, options, on_text)
        if generated is not None:
            return generated
        return self.model.task.prediction_records(self.logits(examples), self.label_names, examples)

    def evaluate(self, examples) -> Evaluation:
        """The run's metrics on labelled examples."""
        rows, truncated = self.model.task.encode(self.encoder, examples)
        scores = evaluate(self.model, self.encoder, rows, examples.labels, self.problem, self.device,
                          label_names=self.label_names, precision=self.precision)
        return Evaluation(scores, len(rows), truncated)
