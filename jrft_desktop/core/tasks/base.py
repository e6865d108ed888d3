"""What every task provides. A task object is stateless; what depends on one data set (its label names, whether
the labels are classes or numbers) comes in as arguments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..config import DataSpec


class TaskData(Protocol):
    """What `Task.load_data` returns: the examples and what the rest of a run needs to know of them."""

    train: Any  # the task's examples (len(), take(count))
    validation: Any
    label_names: tuple[str, ...] | None
    task: str  # the problem, e.g. 'classification' or 'regression'
    validation_source: str
    notes: tuple[str, ...]

    @property
    def num_labels(self) -> int: ...


class Task:
    name: str = ""
    summary: str = ""  # one line, shown in the app and `jrft --help`
    stock_class: str = ""  # the transformers Auto class a merged model of this task loads with

    # --- data ------------------------------------------------------------------------------------------------
    def load_data(self, spec: DataSpec, seed: int):
        """Training and validation examples (a `data.TaskData`); the split and sampling depend only on `seed`."""
        raise NotImplementedError

    def load_examples(self, source: str, metadata: dict, with_labels: bool = True):
        """Every row of another file (a `data.Examples`), read with the columns and label mapping a trained run
        recorded; without labels when `with_labels` is false (to predict)."""
        raise NotImplementedError

    def examples_from_texts(self, texts: Sequence[str], pairs: Sequence[str] | None = None):
        """Examples to predict from texts typed by the user (`jrft predict RUN "text" ...`, the app's try-it box)."""
        raise NotImplementedError

    def guess_columns(self, frame) -> tuple:
        """The columns this task would read from a table (pandas DataFrame), guessed as training guesses them."""
        raise NotImplementedError

    def label_distribution(self, examples, label_names: Sequence[str] | None) -> dict[str, int]:
        """What the Data page shows of the labels: a count per label name (empty when there is none to count)."""
        raise NotImplementedError

    def columns(self, data) -> dict[str, str | None]:
        """The columns a run read, by role, as recorded with the run and its exports."""
        raise NotImplementedError

    def make_encoder(self, tokenizer, max_length: int, model: nn.Module):
        """An object with `encode(examples) -> (rows, truncated count)` and `collate(rows) -> tensors`."""
        raise NotImplementedError

    @staticmethod
    def encode(encoder, examples) -> tuple[list[dict], int]:
        """Token rows of `examples` (a `data.Examples`) and how many were truncated."""
        raise NotImplementedError

    # --- the head, the loss, the metrics ---------------------------------------------------------------------
    def make_head(self, hidden_size: int, outputs: int) -> nn.Module:
        raise NotImplementedError

    def read_out(self, model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
                 input_ids: torch.Tensor) -> torch.Tensor:
        """The head's output from the last hidden states (prompt positions already removed)."""
        raise NotImplementedError

    def label_tensor(self, labels: Sequence, problem: str) -> torch.Tensor:
        raise NotImplementedError

    def loss_function(self, problem: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The mean loss of a batch, (outputs, labels) -> scalar; the trainer optimises it."""
        raise NotImplementedError

    def metrics(self, problem: str, labels, outputs: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def default_metric(self, problem: str) -> str:
        """The validation metric that picks the best checkpoint when the user leaves it at 'auto'."""
        raise NotImplementedError

    def lower_is_better(self, metric: str) -> bool:
        raise NotImplementedError

    # --- predictions and merged models -----------------------------------------------------------------------
    def prediction_records(self, outputs: np.ndarray, label_names: Sequence[str] | None) -> list[dict]:
        """One plain record per example (what `jrft predict` prints and the app shows)."""
        raise NotImplementedError

    def check_stock_compatible(self, model: nn.Module) -> None:
        """Raise an ArtifactError saying why this trained model cannot become a stock model, if it cannot."""
        raise NotImplementedError

    def stock_config(self, config, label_names: Sequence[str] | None):
        """The base model's config made into the stock task class's config (labels, problem type), in place."""
        raise NotImplementedError
