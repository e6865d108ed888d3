"""Sequence classification: one label per text or text pair (classes), or one number (regression).

Which columns it reads (text, optional text pair, label: guessed from their names and contents when not given),
how labels become class ids or numbers, and the seeded, stratified validation split; the head, a linear layer
on a pooled hidden state (the mean of the tokens, the first token through the model's pooler ('cls'), or an
appended mask token ('mask', as in the paper)); its loss, metrics and predictions. A merged model is the
family's stock `AutoModelForSequenceClassification`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import metrics
from ..audit.canaries import random_sentences, vocabulary
from ..config import DataSpec
from ..data import Table, blank, cell_text, is_missing, open_table, require_column, require_rows
from ..errors import ArtifactError, DataError
from ..metrics import softmax
from .base import DataView
from .common import Encoder, LinearHeadTask, held_out_units, open_training_data, privacy_units, sample_rows
from .registry import register

CLASSIFICATION = "classification"
REGRESSION = "regression"
# a majority class's share of the training rows past which 'auto' picks checkpoints by Matthews correlation
SKEWED = 2 / 3


_LABEL_NAMES = ("label", "labels", "class", "category", "target", "y", "sentiment", "score")
_TEXT_NAMES = ("sentence", "text", "sentence1", "question", "premise", "content", "review", "document")
_PAIR_NAMES = (
    ("sentence1", "sentence2"),
    ("question", "sentence"),
    ("premise", "hypothesis"),
    ("text_a", "text_b"),
    ("question1", "question2"),
)

_MISSING_LABELS = frozenset({"nan", "-nan", "na", "n/a", "#n/a", "<na>", "null"})

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Examples:
    """Parallel texts, optional second texts and labels (class ids, floats, or empty when unlabelled)."""

    texts: tuple[str, ...]
    pairs: tuple[str, ...] | None
    labels: tuple[int, ...] | tuple[float, ...]
    units: tuple[str, ...] = ()  # whom each example belongs to (DataSpec.privacy_unit), when read

    def __post_init__(self) -> None:
        if self.pairs is not None and len(self.pairs) != len(self.texts):
            raise ValueError(f"{len(self.pairs)} pairs for {len(self.texts)} texts")
        if self.labels and len(self.labels) != len(self.texts):
            raise ValueError(f"{len(self.labels)} labels for {len(self.texts)} texts")

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, count: int) -> Examples:
        """The first `count` examples."""
        return Examples(self.texts[:count], self.pairs[:count] if self.pairs is not None else None,
                        self.labels[:count], self.units[:count])

    def select(self, rows: Sequence[int]) -> Examples:
        """The examples at these positions, in this order."""
        return Examples(tuple(self.texts[i] for i in rows),
                        tuple(self.pairs[i] for i in rows) if self.pairs is not None else None,
                        tuple(self.labels[i] for i in rows) if self.labels else (),
                        tuple(self.units[i] for i in rows) if self.units else ())


@dataclass(frozen=True)
class TaskData:
    """Training and validation examples plus everything needed to read other files the same way."""

    train: Examples
    validation: Examples
    text_column: str
    text_pair_column: str | None
    label_column: str
    label_names: tuple[str, ...] | None
    problem: str  # CLASSIFICATION or REGRESSION
    validation_source: str
    notes: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.label_names is not None else 1



def guess_columns(frame: pd.DataFrame) -> tuple[str, str | None, str]:
    """(text column, text-pair column or None, label column), guessed from the names and contents."""
    return _guess_columns(frame)


def load_task_data(spec: DataSpec, seed: int) -> TaskData:
    """Training and validation examples for `spec`; the split and the sampling are deterministic per seed."""
    table, held_out, notes = open_training_data(spec, seed)
    text, pair, label = _resolve_columns(spec, table, notes)
    texts, pairs, raw_labels, kept = _usable_rows(table, text, pair, label, notes)
    units = privacy_units(table, spec.privacy_unit, kept) if spec.privacy_unit else None
    problem, label_names, labels = _parse_labels(_class_names_of(table, label, raw_labels), table.name, label)
    rng = np.random.default_rng(seed)

    if held_out is not None:
        for column in (text, pair, label):
            if column is not None:
                require_column(held_out.frame, column, held_out.name)
        val_texts, val_pairs, val_raw, val_kept = _usable_rows(held_out, text, pair, label, notes)
        val_raw = _class_names_of(held_out, label, val_raw)
        val_labels = (encode_labels(val_raw, label_names) if label_names is not None
                      else _floats(val_raw, held_out.name, label))
        # whose each held-out row is, where the file says (the privacy audit then compares units, not rows)
        val_units = privacy_units(held_out, spec.privacy_unit, val_kept) if (
            spec.privacy_unit and spec.privacy_unit in held_out.frame.columns) else ()
        validation = Examples(tuple(val_texts), tuple(val_pairs) if val_pairs is not None else None, val_labels,
                              val_units)
        train_rows = np.arange(len(texts))
        validation_source = held_out.origin
    else:
        # whole units held out (not stratified): the audit's held-out people never trained
        val_rows = held_out_units(units, spec.validation_fraction, rng, notes) if units else None
        if val_rows is not None:
            train_rows, kind = np.setdiff1d(np.arange(len(texts)), val_rows), f"by '{spec.privacy_unit}'"
        else:
            train_rows, val_rows = _split(np.asarray(labels), problem, spec.validation_fraction, rng, table.name)
            kind = "stratified" if problem == CLASSIFICATION else "random"
        validation = _select(texts, pairs, labels, val_rows, units)
        percent = f"{spec.validation_fraction * 100:g}%"
        validation_source = f"seeded {kind} {percent} split of train (seed {seed})"

    picked = sample_rows(len(train_rows), spec.max_train_rows, "training", rng, seed, notes)
    if picked is not None:
        train_rows = train_rows[picked]
    picked = sample_rows(len(validation), spec.max_validation_rows, "validation", rng, seed, notes)
    if picked is not None:
        validation = validation.select(picked)
        validation_source += f", a seeded sample of {spec.max_validation_rows} rows"

    return TaskData(
        train=_select(texts, pairs, labels, train_rows, units),
        validation=validation,
        text_column=text,
        text_pair_column=pair,
        label_column=label,
        label_names=label_names,
        problem=problem,
        validation_source=validation_source,
        notes=tuple(notes),
    )


def load_examples(
    source: str,
    text_column: str,
    text_pair_column: str | None,
    label_column: str | None,
    label_names: tuple[str, ...] | None,
) -> Examples:
    """Every row of another file, read with the columns and label mapping of a trained run.

    Rows are kept in file order (predictions line up with the file). Labels are empty when `label_column` is
    None, missing from the file or blank in every row; they are floats when `label_names` is None."""
    table = open_table(source)
    require_rows(table)
    frame = table.frame
    require_column(frame, text_column, table.name)
    if text_pair_column is not None:
        require_column(frame, text_pair_column, table.name)
    texts = tuple(cell_text(value) for value in frame[text_column].tolist())
    pairs = tuple(cell_text(value) for value in frame[text_pair_column].tolist()) if text_pair_column else None

    labels: tuple[int, ...] | tuple[float, ...] = ()
    if label_column is not None and label_column in frame.columns:
        blank = _missing_label(frame[label_column])
        if blank.any() and not blank.all():
            first = int(np.flatnonzero(blank)[0]) + 1
            raise DataError(f"{int(blank.sum())} row(s) of {table.name} have an empty '{label_column}' (first at "
                            f"data row {first}); fill them in, or drop the column to predict without scoring.")
        if not blank.any():
            values = _class_names_of(table, label_column, frame[label_column].tolist(), label_names)
            labels = (encode_labels(values, label_names) if label_names is not None
                      else _floats(values, table.name, label_column))
    return Examples(texts, pairs, labels)


def label_distribution(examples: Examples, label_names: Sequence[str] | None) -> dict[str, int]:
    """Class name -> number of examples, in class-id order; empty for regression or unlabelled examples."""
    if label_names is None or not examples.labels:
        return {}
    counts = np.bincount(np.asarray(examples.labels, dtype=np.int64), minlength=len(label_names))
    return {name: int(count) for name, count in zip(label_names, counts)}


def encode_labels(values: Iterable[Any], label_names: Sequence[str]) -> tuple[int, ...]:
    """Class ids of raw label values (from any file) under the mapping `label_names` of a training set."""
    index = {name: position for position, name in enumerate(label_names)}
    keys = [_lookup_key(value, index) for value in values]
    if "" in keys:
        raise DataError(f"{keys.count('')} label(s) are empty; every row needs a label.")
    unseen = sorted({key for key in keys if key not in index})
    if unseen:
        shown = ", ".join(f"'{key}'" for key in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
        known = ", ".join(f"'{name}'" for name in label_names)
        raise DataError(f"Label(s) {shown} did not occur in the training data; known labels: {known}.")
    return tuple(index[key] for key in keys)



# --- columns ------------------------------------------------------------------------------------------------


def _resolve_columns(spec: DataSpec, table: Table, notes: list[str]) -> tuple[str, str | None, str]:
    frame = table.frame
    if frame.shape[1] < 2:
        raise DataError(f"{table.name} has a single column ('{frame.columns[0]}') but needs a text column and a "
                        "label column; if it has more, its delimiter looks wrong.")
    given_text = spec.text_column or None
    given_pair = spec.text_pair_column or None
    given_label = spec.label_column or None
    for column in (given_text, given_pair, given_label):
        if column is not None:
            require_column(frame, column, table.name)
    text, pair, label = _guess_columns(frame, given_text, given_label)
    if given_text is not None or given_pair is not None:
        pair = given_pair
    if text == label or pair in (text, label):
        raise DataError(f"The text, text pair and label columns must differ (text '{text}', pair '{pair}', "
                        f"label '{label}').")
    guessed = []
    if given_text is None:
        guessed.append(f"text '{text}'" + (f", text pair '{pair}'" if pair else ""))
    if given_label is None:
        guessed.append(f"label '{label}'")
    if guessed:
        notes.append(f"Guessed columns: {', '.join(guessed)} (set text_column / text_pair_column / label_column "
                     "to choose others).")
    return text, pair, label


def _guess_columns(frame: pd.DataFrame, text: str | None = None,
                   label: str | None = None) -> tuple[str, str | None, str]:
    columns = list(frame.columns)
    if len(columns) < 2:
        only = f"column '{columns[0]}'" if columns else "no columns"
        raise DataError(f"Need a text column and a label column, but the data has only {only}.")
    by_name: dict[str, Any] = {}
    for column in columns:
        by_name.setdefault(str(column).strip().lower(), column)

    if label is None:
        label = next((by_name[name] for name in _LABEL_NAMES if name in by_name and by_name[name] != text), None)
    pair = None
    if text is None:
        for first, second in _PAIR_NAMES:
            if first in by_name and second in by_name and label not in (by_name[first], by_name[second]):
                text, pair = by_name[first], by_name[second]
                break
        else:
            text = next((by_name[name] for name in _TEXT_NAMES if name in by_name and by_name[name] != label), None)
    if label is None:
        rest = [column for column in columns if column not in (text, pair)]
        if not rest:
            raise DataError(f"No column is left for the label; columns: {', '.join(map(str, columns))}.")
        label = rest[-1]
    if text is None:
        text = _longest_text_column(frame, [column for column in columns if column != label])
    return text, pair, label


def _longest_text_column(frame: pd.DataFrame, candidates: list[Any]) -> Any:
    textual = [column for column in candidates if pd.api.types.is_string_dtype(frame[column])] or candidates
    return max(textual, key=lambda column: frame[column].astype(str).str.len().mean() if len(frame) else 0)



def _usable_rows(table: Table, text: str, pair: str | None, label: str,
                 notes: list[str]) -> tuple[list[str], list[str] | None, list[Any], np.ndarray]:
    """Texts, pairs and raw labels of the rows that have a label and a text, and their positions in the table; drops
    the others with a note."""
    frame = table.frame
    blank_label = _missing_label(frame[label])
    if blank_label.all():
        raise DataError(f"Column '{label}' of {table.name} is empty in every row (blank or NaN), so there is nothing "
                        "to learn; choose the column that holds the labels.")
    empty_text = blank(frame[text]) | (blank(frame[pair]) if pair is not None else False)
    if blank_label.any():
        notes.append(f"Dropped {int(blank_label.sum())} row(s) of {table.name} with an empty '{label}'.")
    empty_only = empty_text & ~blank_label
    if empty_only.any():
        columns = f"'{text}'" + (f" or '{pair}'" if pair is not None else "")
        notes.append(f"Dropped {int(empty_only.sum())} row(s) of {table.name} with an empty {columns}.")
    kept = frame[~(blank_label | empty_text)]
    if len(kept) == 0:
        raise DataError(f"No rows of {table.name} have both a text and a label.")
    texts = [cell_text(value) for value in kept[text].tolist()]
    pairs = [cell_text(value) for value in kept[pair].tolist()] if pair is not None else None
    return texts, pairs, kept[label].tolist(), np.flatnonzero(~(blank_label | empty_text))



def _missing_label(series: pd.Series) -> np.ndarray:
    """Blank labels, and the spellings of a missing value that spreadsheets and pandas write ("NaN", "NULL", ...);
    read as text they would silently become a class of their own."""
    return blank(series) | series.astype(str).str.strip().str.lower().isin(_MISSING_LABELS).to_numpy(dtype=bool)



def _class_names_of(table: Table, column: str, values: list[Any], known: Sequence[str] | None = None) -> list[Any]:
    """A `datasets` ClassLabel column's ids as the data's own names for them, unless the run they are read for
    recorded the ids themselves (`known`: its label names, from before names were read)."""
    names = table.class_names.get(column)
    if not names or (known is not None and not set(known) <= set(names)):
        return values
    return [names[int(value)] for value in values]


def _parse_labels(raw: list[Any], name: str, column: str) -> tuple[str, tuple[str, ...] | None, tuple]:
    """(problem, label names, labels): integer-valued numbers and strings are classes, other numbers regression."""
    numbers = _as_numbers(raw)
    if numbers is not None and not all(number.is_integer() for number in numbers):
        return REGRESSION, None, tuple(numbers)
    keys: list[Any] = [int(number) for number in numbers] if numbers is not None else [_label_key(v) for v in raw]
    classes = sorted(set(keys))
    if len(classes) < 2:
        raise DataError(f"Classification needs at least two classes; found only '{classes[0]}' in column "
                        f"'{column}' of {name}.")
    index = {value: position for position, value in enumerate(classes)}
    return CLASSIFICATION, tuple(str(value) for value in classes), tuple(index[key] for key in keys)


def _is_number(value: Any) -> bool:
    """A number or a numeric string; bools are not numbers here (they are two classes)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, str):
        return _NUMBER.fullmatch(value.strip()) is not None
    return isinstance(value, (int, float, np.number))


def _as_numbers(raw: list[Any]) -> list[float] | None:
    return [float(value) for value in raw] if all(_is_number(value) for value in raw) else None


def _floats(values: list[Any], name: str, column: str) -> tuple[float, ...]:
    numbers = _as_numbers(values)
    if numbers is None:
        example = next(value for value in values if not _is_number(value))
        raise DataError(f"Column '{column}' of {name} must hold numbers for a regression task; found '{example}'.")
    return tuple(numbers)


def _label_key(value: Any) -> str:
    """The class name a raw label value stands for: 1, 1.0 and "1" are all "1"."""
    if isinstance(value, str):
        return value.strip()
    if is_missing(value):
        return ""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
        return str(int(value)) if float(value).is_integer() else str(float(value))
    return str(value)


def _lookup_key(value: Any, index: dict[str, int]) -> str:
    key = _label_key(value)
    if key not in index and _NUMBER.fullmatch(key) and float(key).is_integer():
        return str(int(float(key)))
    return key


# --- splitting ----------------------------------------------------------------------------------------------


def _split(labels: np.ndarray, problem: str, fraction: float, rng: np.random.Generator,
           name: str) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows), both sorted; classification keeps every class's share."""
    if problem == REGRESSION:
        if len(labels) < 2:
            raise DataError(f"{name} has a single usable row; a validation split needs at least two.")
        order = rng.permutation(len(labels))
        count = min(max(round(fraction * len(labels)), 1), len(labels) - 1)
        held = order[:count]
    else:
        parts = []
        for value in np.unique(labels):
            members = np.flatnonzero(labels == value)
            rng.shuffle(members)
            # A class with two or more rows puts at least one in each part.
            count = min(max(round(fraction * len(members)), 1), len(members) - 1)
            parts.append(members[:count])
        held = np.concatenate(parts)
        if len(held) == 0:
            raise DataError(f"Every class of {name} has a single row, so none can be held out for validation; "
                            "give a validation file.")
    held = np.sort(held)
    return np.setdiff1d(np.arange(len(labels)), held), held


def _select(texts: list[str], pairs: list[str] | None, labels: tuple, rows: np.ndarray,
            units: Sequence[str] | None = None) -> Examples:
    return Examples(
        tuple(texts[row] for row in rows),
        tuple(pairs[row] for row in rows) if pairs is not None else None,
        tuple(labels[row] for row in rows),
        tuple(units[row] for row in rows) if units is not None else (),
    )



# --- the task -------------------------------------------------------------------------------------------------
# The pooling modes of sentence-transformers' Pooling module that compute what pool() computes
SENTENCE_POOLING = {"mean": "mean", "cls": "cls", "last": "lasttoken"}


class ClassifyDataView(DataView):
    summary = "Classify texts or text pairs into classes, or predict a number (regression)."

    def guess_columns(self, frame):
        return guess_columns(frame)

    def describe(self, data):
        if data.problem == CLASSIFICATION:
            return f"Classification into {data.num_labels} classes"
        return "Regression (the labels are numbers; the model learns to predict them)"

    def short_description(self, data):
        return f"{data.num_labels} classes" if data.problem == CLASSIFICATION else "regression"

    def label_distribution(self, examples, label_names):
        return label_distribution(examples, label_names)


class Classify(LinearHeadTask):
    name = "classify"
    stock_class = "AutoModelForSequenceClassification"
    data_view = ClassifyDataView()

    def load_data(self, spec, seed):
        return load_task_data(spec, seed)

    def load_examples(self, source, metadata, with_labels=True):
        columns, names = metadata["columns"], metadata["label_names"]
        return load_examples(source, columns["text"], columns["text_pair"], columns["label"] if with_labels else None,
                             tuple(names) if names else None)

    def examples_from_texts(self, texts, pairs=None):
        return Examples(tuple(texts), tuple(pairs) if pairs is not None else None, ())

    def make_canaries(self, data, count, rng):
        """Random sequences of the data's words (and second texts for pairs), each with a random class, or for
        regression a random number within the labels' range."""
        words = vocabulary(data.train.texts)
        texts = tuple(" ".join(sentence) for sentence in random_sentences(words, count, rng))
        pairs = tuple(" ".join(sentence) for sentence in random_sentences(words, count, rng)) \
            if data.train.pairs is not None else None
        if data.label_names is not None:
            labels: tuple = tuple(int(label) for label in rng.integers(0, len(data.label_names), size=count))
        else:
            values = np.asarray(data.train.labels, dtype=np.float64)
            labels = tuple(float(value) for value in rng.uniform(values.min(), values.max(), size=count))
        return Examples(texts, pairs, labels)

    def columns(self, data):
        return {"text": data.text_column, "text_pair": data.text_pair_column, "label": data.label_column}

    def make_encoder(self, tokenizer, max_length, model, data=None):
        return Encoder(tokenizer, max_length, model)

    @staticmethod
    def encode(encoder: Encoder, examples) -> tuple[list[dict], int]:
        return encoder.encode(examples.texts, examples.pairs)

    def truncation_note(self, train, validation, max_length):
        return (f"{train} training and {validation} validation texts were longer than {max_length} tokens and were "
                "truncated")

    def read_out(self, model, hidden, attention_mask, input_ids):
        pooled = self.pool(model, hidden, attention_mask, input_ids)
        # The head computes in fp32 under bf16 autocast (it costs nothing): bf16 keeps 3 significant digits, which
        # quantised a regression's predictions and collapsed a small model's nearly equal scores into ties.
        with torch.autocast(pooled.device.type, enabled=False):
            return model.head(pooled.float())

    @staticmethod
    def pool(model, hidden: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        if model.pooling == "mean":
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if model.pooling in ("mask", "last"):  # the last mask token, or the last token that is not padding
            hits = input_ids == model.mask_token_id if model.pooling == "mask" else input_ids != model.pad_token_id
            where = hits.int() * torch.arange(input_ids.shape[1], device=input_ids.device)
            return hidden[rows, where.argmax(dim=1)]  # as the stock decoder classifiers find their token
        pooler = getattr(model.base(), "pooler", None)
        return pooler(hidden) if pooler is not None else hidden[:, 0]

    def loss_function(self, problem):
        if problem == REGRESSION:
            return lambda outputs, labels: nn.functional.mse_loss(outputs.float().squeeze(-1), labels)
        return lambda outputs, labels: nn.functional.cross_entropy(outputs.float(), labels)

    def metrics(self, problem, labels, outputs, label_names):
        return metrics.compute(problem, labels, outputs)

    def default_metric(self, data):
        """Accuracy, or Matthews correlation where one class holds more than SKEWED of the training rows: there
        accuracy rewards answering that class (CoLA, 70 % acceptable: a SLaSh run chosen by accuracy sat at 70-71 %
        while its Matthews correlation moved between 0.05 and 0.16; docs/benchmarks.md)."""
        if data.problem != CLASSIFICATION:
            return "pearson"
        counts = np.bincount(np.asarray(data.train.labels, dtype=np.int64))
        return "matthews" if counts.max() > SKEWED * counts.sum() else "accuracy"

    def prediction_records(self, outputs, label_names, examples=None):
        if not label_names:
            return [{"value": float(row[0])} for row in outputs]
        probabilities = softmax(np.asarray(outputs)) if len(outputs) else np.zeros((0, len(label_names)))
        return [{"label": label_names[int(row.argmax())],
                 "probabilities": {name: round(float(p), 6) for name, p in zip(label_names, row)}}
                for row in probabilities]

    def api_answer(self, record):
        """Hugging Face text-embeddings-inference's /predict: every label with its score, best first (a regression
        run's one number as the score of the label 'value')."""
        if "value" in record:
            return [{"label": "value", "score": record["value"]}]
        ranked = sorted(record["probabilities"].items(), key=lambda item: item[1], reverse=True)
        return [{"label": label, "score": score} for label, score in ranked]

    def check_stock_compatible(self, model):
        stock = model.family.stock_pooling
        if model.pooling != stock:
            raise ArtifactError(
                f"This run's head reads the {model.pooling} pooling, which the stock {model.info.family} "
                f"classifier cannot compute (it reads the {stock} token); export it as "
                f"{'a sentence-transformers folder or as ' if model.pooling in SENTENCE_POOLING else ''}ONNX "
                "(`jrft export --merged` without --format picks the form that fits)."
            )

    def sentence_layers(self, model):
        if model.pooling not in SENTENCE_POOLING:
            raise ArtifactError(
                "A sentence-transformers folder cannot hold a mask-pooled run: its Pooling module reads the first "
                "token, a mean, a maximum or the last token, never the mask token this head reads (placed before "
                "the final separator). Export it as ONNX, which computes this pooling inside its graph."
            )
        layers = [(model.head, nn.Identity())]
        pooler = getattr(model.base(), "pooler", None)
        if model.pooling == "cls" and pooler is not None:  # what pool() reads: the pooler's dense + activation
            layers.insert(0, (pooler.dense, pooler.activation))
        return SENTENCE_POOLING[model.pooling], layers

    def stock_tokenizer(self, model, tokenizer):
        return inserting_mask(tokenizer) if model.pooling == "mask" else tokenizer


def inserting_mask(tokenizer):
    """A fast tokenizer that puts the mask token before the last special token, as `Encoder.encode` does for mask
    pooling (truncation leaves room for it the same way): the tokenizer's own with a template post-processor, as
    the generic class, which keeps that post-processor when it is saved and loaded again."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    special = {tokenizer.mask_token: tokenizer.mask_token_id}
    templates = []
    for probe in (("a",), ("a", "b")):
        encoding = backend.encode(*probe)
        pieces = []
        for token, token_id, sequence, type_id in zip(encoding.tokens, encoding.ids, encoding.sequence_ids,
                                                      encoding.type_ids):
            piece = f"{token}:{type_id}" if sequence is None else f"${'AB'[sequence]}:{type_id}"
            if sequence is None:
                special[token] = token_id
            if not pieces or pieces[-1] != piece or sequence is None:
                pieces.append(piece)
        if encoding.sequence_ids[-1] is not None:
            raise ArtifactError("This tokenizer ends a text with no special token, so the mask token's place (before "
                                "the final separator) cannot be given to a stock tokenizer.")
        templates.append(pieces[:-1] + [f"{tokenizer.mask_token}:{encoding.type_ids[-1]}", pieces[-1]])
    backend.post_processor = TemplateProcessing(single=templates[0], pair=templates[1],
                                                special_tokens=list(special.items()))
    # saved under the class name that transformers 4 knows too (5 calls the generic class TokenizersBackend)
    generic = type("PreTrainedTokenizerFast", (PreTrainedTokenizerFast,), {})
    return generic(tokenizer_object=backend, model_input_names=tokenizer.model_input_names,
                   model_max_length=tokenizer.model_max_length, **tokenizer.special_tokens_map)


register(Classify())
