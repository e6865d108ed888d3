"""What every task provides: `Task`, what training, evaluation, prediction and export ask of it, and `DataView`
(`task.data_view`), what the app's Data page shows of its data. Both are stateless; what depends on one data set
(its label names, whether the labels are classes or numbers) comes in as arguments."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..config import DataSpec
from ..errors import ArtifactError


class TaskData(Protocol):
    """What `Task.load_data` returns: the examples and what the rest of a run needs to know of them."""

    train: Any  # the task's examples (len(), take(count))
    validation: Any
    label_names: tuple[str, ...] | None
    problem: str  # what kind of labels the data has, e.g. 'classification' or 'regression' (the loss and metrics)
    validation_source: str
    notes: tuple[str, ...]

    @property
    def num_labels(self) -> int: ...


class DataView:
    """What the app's Data page shows of a task's data, before any training: how it names the columns, which ones it
    guesses, a preview of tagged words, placeholders to fill in, what the model will learn and the labels' counts.
    Training never asks it, so a task's training interface stays small."""

    summary: str = ""  # one line naming the task, in the Data page's list of tasks
    # How the page names the text, text-pair and label columns this task reads (None: it reads no such column)
    column_roles: tuple[str, str | None, str] = ("Text", "Second text (sentence pairs)", "Label")

    def guess_columns(self, frame) -> tuple:
        """The columns this task would read from a table (pandas DataFrame), guessed as training guesses them."""
        raise NotImplementedError

    def tagged_preview(self, frame) -> list[list[tuple[str, str]]] | None:
        """The first rows as words with their tags, when the task tags words (else None)."""
        return None

    def placeholders(self, source: str) -> list[str]:
        """Names such as {{name}} in a data file whose values the user gives (`DataSpec.fill`); none by default."""
        return []

    def describe(self, data) -> str:
        """One line: what the model will learn from `data` (a `TaskData`)."""
        raise NotImplementedError

    def short_description(self, data) -> str:
        """A few lower-case words for the line that describes a run before it trains, e.g. '2 classes',
        'regression', 'generation'."""
        raise NotImplementedError

    def label_distribution(self, examples, label_names: Sequence[str] | None) -> dict[str, int]:
        """A count per label name (empty when there is none to count, e.g. generation)."""
        return {}


class Task:
    """What training, evaluation, prediction and export ask of a task (the Data page asks its `data_view`)."""

    name: str = ""
    stock_class: str = ""  # the transformers Auto class a merged model of this task loads with
    backbone_class: str = "AutoModel"  # the transformers Auto class the base model loads as (its head left out)
    trains_head: bool = True  # a new head trains with the method (False: the model's own output layer, frozen)
    generates: bool = False  # answers by generating text (`predict_records`), not from its outputs
    pools: bool = True  # the head reads one pooled state per example, so the model's pooling setting applies
    data_view: DataView = DataView()  # what the app's Data page shows of this task's data

    # --- data ------------------------------------------------------------------------------------------------
    def recognises(self, frame) -> bool:
        """Whether a table (the first rows of the data, pandas) is this task's kind of data: DataSpec.task 'auto'
        takes the first task that recognises the data, and the default task when none does."""
        return False

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

    def columns(self, data) -> dict[str, str | None]:
        """The columns a run read, by role, as recorded with the run and its exports."""
        raise NotImplementedError

    def make_encoder(self, tokenizer, max_length: int, model: nn.Module, data: DataSpec | None = None):
        """An object with `encode(examples) -> (rows, truncated count)`, `collate(rows) -> input tensors`,
        `collate_labels(rows, labels) -> the loss's label tensor` (the labels of those rows' examples) and `notes`;
        `data`, the run's data settings when training (None: a restored run's defaults)."""
        raise NotImplementedError

    @staticmethod
    def encode(encoder, examples) -> tuple[list[dict], int]:
        """Token rows of `examples` (a `data.Examples`) and how many were truncated."""
        raise NotImplementedError

    def row_lengths(self, rows: Sequence[dict]) -> list[int]:
        """The length each encoded row is padded to in a batch (the trainer groups batches by it, evaluation sorts
        by it): its token count."""
        return [len(row["input_ids"]) for row in rows]

    def outputs_per_token(self, model: nn.Module) -> int:
        """The width of the head's output at every token, for the memory estimate (0: a pooled head, one output per
        example)."""
        return 0

    def model_notes(self, model: nn.Module) -> tuple[str, ...]:
        """What the user should know about training this task on this model (shown with the run's notes)."""
        return ()

    def truncation_note(self, train: int, validation: int, max_length: int) -> str:
        """The note that says how much the maximum length cut (`encode`'s counts for both parts)."""
        raise NotImplementedError

    def row_outputs(self, outputs: np.ndarray, rows: Sequence[dict]) -> Sequence:
        """The model's outputs for a batch of rows (padded to the batch), one item per row: a pooled head's rows."""
        return outputs

    def join_outputs(self, outputs: list, width: int):
        """The outputs of all rows, in order, as `metrics` and `prediction_records` take them: a pooled head's as one
        [rows, width] array."""
        return np.stack(outputs) if outputs else np.zeros((0, width), dtype=np.float32)

    # --- the head, the loss, the metrics ---------------------------------------------------------------------
    def make_head(self, hidden_size: int, outputs: int, bias: bool = True) -> nn.Module:
        """The trainable head; `bias` is false where the family's stock head has none (decoders' `score`)."""
        raise NotImplementedError

    def head_for(self, loaded, outputs: int, bias: bool) -> nn.Module:
        """The head of a model built on `loaded` (a `models.LoadedBackbone`): a new one (`make_head`), or for a task
        that reads the model's own output layer, that layer."""
        return self.make_head(loaded.info.hidden_size, outputs, bias=bias)

    def read_out(self, model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
                 input_ids: torch.Tensor) -> torch.Tensor:
        """The head's output from the last hidden states (prompt positions already removed)."""
        raise NotImplementedError

    def loss_function(self, problem: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The mean loss of a batch, (outputs, labels) -> scalar; the trainer optimises it. A task with
        `sums_in_forward` also takes `loss_sums`' output as the outputs."""
        raise NotImplementedError

    sums_in_forward: bool = False  # the trainer passes the labels into the forward pass, which returns `loss_sums`

    def loss_sums(self, model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss's sums from the last hidden states (a task with `sums_in_forward`): what `loss_function` turns
        into the mean loss, computed without holding every output of the head at once."""
        raise NotImplementedError

    def score_rows(self, model: nn.Module, encoder, rows: Sequence[dict], device: torch.device, processes,
                   precision: str) -> dict | None:
        """The validation scores of encoded rows when the task computes them itself (a language model's token
        losses: its outputs are too big to gather); None: from the outputs, by `metrics`."""
        return None

    def predict_records(self, predictor, examples, options=None, on_text=None) -> list[dict] | None:
        """The records of a task that answers by generating (`options`: a `config.Decoding`; `on_text(new text)` as
        an answer grows); None: from the outputs, by `prediction_records`."""
        return None

    def metrics(self, problem: str, labels, outputs, label_names: Sequence[str] | None) -> dict:
        """The validation scores by name (numbers; a task may add one nested table, e.g. per entity type)."""
        raise NotImplementedError

    def default_metric(self, data: TaskData) -> str:
        """The validation metric that picks the best checkpoint (and stops a converging run) when the user leaves it
        at 'auto'."""
        raise NotImplementedError

    def lower_is_better(self, metric: str) -> bool:
        raise NotImplementedError

    # --- predictions and merged models -----------------------------------------------------------------------
    def prediction_records(self, outputs, label_names: Sequence[str] | None, examples=None) -> list[dict]:
        """One plain record per example (what `jrft predict` prints and the app shows); `examples` are the ones
        predicted, for a task whose records point into their text."""
        raise NotImplementedError

    def api_answer(self, record: dict):
        """One example's record (`prediction_records`) as inference servers answer it (`jrft serve`'s /predict): by
        default the record itself."""
        return record

    def check_stock_compatible(self, model: nn.Module) -> None:
        """Raise an ArtifactError saying why this trained model cannot become a stock model, if it cannot."""
        raise NotImplementedError

    def stock_config(self, config, label_names: Sequence[str] | None):
        """The base model's config made into the stock task class's config (labels, problem type), in place."""
        raise NotImplementedError

    def sentence_layers(self, model: nn.Module) -> tuple[str, list[tuple[nn.Linear, nn.Module]]]:
        """How a sentence-transformers folder computes this run's output from the encoder's token states: the mode
        of its Pooling module and the (linear layer, activation) of each Dense module after it; an ArtifactError
        saying why when that cannot express the run (a task with one output per token cannot)."""
        raise ArtifactError(f"A sentence-transformers folder gives one vector per text; a {self.name} run's "
                            "outputs do not fit one; export it as ONNX.")

    def stock_tokenizer(self, model: nn.Module, tokenizer):
        """The tokenizer a stock runtime needs to give the model exactly this run's token ids (the training
        encoder's special tokens included)."""
        return tokenizer

    # --- the privacy audit (core/audit) ----------------------------------------------------------------------
    def make_canaries(self, data, count: int, rng: np.random.Generator):
        """`count` generated examples of this task's kind, with labels, unlike anything in `data` and easy to memorise
        (random labels on the data's words, or a random secret in a fixed template): what a run trains with on
        request, for its audit (`audit.canaries`)."""
        raise NotImplementedError

    def canary_candidates(self, canaries, index: int, count: int, rng: np.random.Generator):
        """(`count` copies of canary `index` with its secret replaced by other random secrets, log2 of the number of
        possible secrets), to rank the true secret among them (its exposure); None when this task's canaries hold
        no secret."""
        return None

    @torch.no_grad()
    def example_losses(self, model: nn.Module, encoder, rows: Sequence[dict], labels: Sequence, problem: str,
                       device: torch.device, precision: str = "fp32", batch_size: int = 16) -> np.ndarray:
        """Each row's own loss (this task's loss on that example alone, the model computing in `precision`, a
        resolved one, as evaluation does), in the rows' order: the audit's per-example score is its negative (a
        generated answer's mean log-likelihood)."""
        from ..train import precision as precisions

        loss_fn = self.loss_function(problem)
        autocast = precisions.autocast(precision, device)
        model.eval()
        lengths = self.row_lengths(rows)
        order = sorted(range(len(rows)), key=lengths.__getitem__)
        losses = np.zeros(len(rows))
        for start in range(0, len(order), batch_size):
            picked = order[start:start + batch_size]
            batch = [rows[i] for i in picked]
            inputs = {key: value.to(device) for key, value in encoder.collate(batch).items()}
            targets = encoder.collate_labels(batch, [labels[i] for i in picked]).to(device)
            with autocast or contextlib.nullcontext():
                outputs = model(**inputs)
            for position, index in enumerate(picked):
                losses[index] = float(loss_fn(outputs[position:position + 1], targets[position:position + 1]))
        return losses
