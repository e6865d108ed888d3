"""What several tasks share: reading the training and validation tables, the seeded split and sampling of their
examples, the tokenising `Encoder` that the tasks' encoders build on, and `LinearHeadTask`, the base of the tasks
whose head is a new linear layer over named labels (classify, tag). A task module imports these from here, never
from another task's module."""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import DataSpec
from ..data import Sample, Table, blank, cell_text, open_table, require_column, require_rows
from ..errors import DataError, ModelError
from .base import Task

ENCODE_CHUNK = 4096  # texts tokenised at a time
LOWER_IS_BETTER = frozenset({"loss", "mse"})  # the metrics of classify and tag where a smaller value is better


# --- reading, splitting and sampling ----------------------------------------------------------------------------
def open_training_data(spec: DataSpec, seed: int) -> tuple[Table, Table | None, list[str]]:
    """What every task reads first: the checks of `spec`, the training table (for a file too big to read whole when
    the run caps its rows, a seeded sample) and the validation table (the given file, or one found beside the
    training data; None: the task splits one off), with the notes of reading them. (DataSpec checked its numbers'
    ranges when it was made.)"""
    if not spec.train:
        raise DataError("No training data given; choose a file, a folder or a dataset name.")

    validation_file = spec.validation or None
    table = open_table(spec.train, with_companion=validation_file is None,
                       sample=_rows_to_read(spec, carves_validation=validation_file is None, seed=seed))
    notes = list(table.notes)
    require_rows(table)
    held_out = open_table(validation_file) if validation_file is not None else table.companion
    if held_out is not None:
        notes.extend(held_out.notes)
        if validation_file is None:
            notes.append(f"Validation data: {held_out.origin}, found beside the training data "
                         "(set a validation file to use another).")
        require_rows(held_out)
    sample = _rows_to_read(spec, carves_validation=held_out is None, seed=seed)
    if sample is not None and len(table.frame) > sample.rows:
        # A file read whole is cut to the sample a streamed one keeps, so that a row limit splits validation off
        # the rows the run uses (a tenth of them by default), not off the whole file, whatever the memory.
        keep = np.sort(np.random.default_rng(seed).choice(len(table.frame), size=sample.rows, replace=False))
        notes.append(f"Sampled {sample.rows:,} of the {len(table.frame):,} rows of {table.name} at random "
                     f"(seed {seed})" + (f": {spec.max_train_rows:,} to train on, the rest for the "
                                         f"{spec.validation_fraction * 100:g}% validation split." if held_out is None
                                         else "."))
        table.frame = table.frame.iloc[keep].reset_index(drop=True)
    return table, held_out, notes


def privacy_units(table: Table, column: str, rows=None) -> tuple[str, ...]:
    """Whom each row (of `rows`: positions in the table, default all) belongs to, from the privacy unit column
    (`DataSpec.privacy_unit`); every row must name one."""
    require_column(table.frame, column, table.name)
    values = table.frame[column] if rows is None else table.frame[column].iloc[list(rows)]
    empty = np.flatnonzero(blank(values))
    if empty.size:
        raise DataError(f"{empty.size} row(s) of {table.name} have an empty privacy unit '{column}' (first at data row "
                        f"{int(empty[0]) + 1} of those read); every row must name whom it belongs to.")
    return tuple(cell_text(value).strip() for value in values.tolist())


def _rows_to_read(spec: DataSpec, carves_validation: bool, seed: int) -> Sample | None:
    """The sample of the training file a row limit asks for: the training rows, and the validation split's share
    on top when the split is carved from the file."""
    if spec.max_train_rows is None:
        return None
    share = 1.0 - spec.validation_fraction if carves_validation else 1.0
    return Sample(math.ceil(spec.max_train_rows / share), seed)


def sample_rows(count: int, limit: int | None, what: str, rng: np.random.Generator, seed: int,
                notes: list[str]) -> np.ndarray | None:
    """Positions of a seeded random sample of `limit` of `count` rows (sorted), with a note; None: keep them all."""
    if limit is None or limit >= count:
        return None
    notes.append(f"Sampled {limit} of {count} {what} rows at random (seed {seed}).")
    return np.sort(rng.choice(count, size=limit, replace=False))


MIN_UNITS_TO_SPLIT = 10  # fewer privacy units than this: rows are split, or whole classes could go to validation


def held_out_units(units: Sequence[str], fraction: float, rng: np.random.Generator,
                   notes: list[str]) -> np.ndarray | None:
    """The sorted rows of a seeded random share of the privacy units (about `fraction` of the rows, whole units): a
    private run's validation then holds people it never trained on, so the privacy audit compares people. None
    (rows are split instead, with a note) for fewer than MIN_UNITS_TO_SPLIT units."""
    names = sorted(set(units))
    if len(names) < MIN_UNITS_TO_SPLIT:
        notes.append(f"Only {len(names)} privacy units: the validation split takes rows, not whole units (it does "
                     f"from {MIN_UNITS_TO_SPLIT} on), so the privacy audit leaves out the units on both sides.")
        return None
    rows_of: dict[str, list[int]] = {}
    for row, unit in enumerate(units):
        rows_of.setdefault(unit, []).append(row)
    held: list[int] = []
    for unit in rng.permutation(names)[:len(names) - 1]:  # at least one unit stays to train on
        if held and len(held) + len(rows_of[unit]) / 2 > fraction * len(units):
            break
        held += rows_of[unit]
    return np.sort(np.asarray(held, dtype=int))


def split_and_sample(train, validation, validation_source: str, spec: DataSpec, seed: int, rng: np.random.Generator,
                     notes: list[str], name: str, unit: str) -> tuple[Any, Any, str]:
    """(train, validation, where validation came from) for a task whose examples have `select(rows)`: a seeded
    random split of `train` when `validation` is None, then the seeded samples the row limits ask for."""
    if validation is None:
        if len(train) < 2:
            raise DataError(f"{name} has a single {unit}; a validation split needs at least two.")
        held = held_out_units(train.units, spec.validation_fraction, rng, notes) if train.units else None
        how = f"by '{spec.privacy_unit}'"
        if held is None:
            order = rng.permutation(len(train))
            held = np.sort(order[:min(max(round(spec.validation_fraction * len(train)), 1), len(train) - 1)])
            how = "random"
        train, validation = train.select(np.setdiff1d(np.arange(len(train)), held)), train.select(held)
        validation_source = f"seeded {how} {spec.validation_fraction * 100:g}% split of train (seed {seed})"
    picked = sample_rows(len(train), spec.max_train_rows, "training", rng, seed, notes)
    train = train.select(picked) if picked is not None else train
    picked = sample_rows(len(validation), spec.max_validation_rows, "validation", rng, seed, notes)
    if picked is not None:
        validation = validation.select(picked)
        validation_source += f", a seeded sample of {spec.max_validation_rows} rows"
    return train, validation, validation_source


# --- tokenising ----------------------------------------------------------------------------------------------
class Encoder:
    """Texts (or text pairs) to padded token batches, with the mask token appended when the head reads it."""

    notes: tuple[str, ...] = ()  # what the user should know about how this encoder encodes (the run's notes)

    def __init__(self, tokenizer, max_length: int, model):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pooling = model.pooling
        if self.pooling == "mask" and tokenizer.mask_token_id is None:
            raise ModelError("This model's tokenizer has no mask token; choose pooling 'mean' or 'cls'.")
        if max_length < 4:
            raise ModelError(f"A max length of {max_length} tokens leaves no room for text; use at least 8.")
        positions, prompts = model.positions(), model.prompt_count()
        if positions is not None:
            room = positions - prompts
            if room < 8:
                raise ModelError(f"{prompts} prompt tokens leave {max(room, 0)} of this model's {positions} positions "
                                 f"for the text; use at most {positions - 8} prompt tokens (a smaller budget).")
            self.max_length = min(max_length, room)
        wanted = ("input_ids", "attention_mask", "token_type_ids") if model.uses_token_types else \
            ("input_ids", "attention_mask")
        self.keys = [key for key in wanted if key in tokenizer.model_input_names or key != "token_type_ids"]

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> tuple[list[dict], int]:
        """Token ids per example, and how many examples were truncated.

        A chunk of texts at a time, kept as int32 arrays: the tokenizer's per-text objects and Python int lists
        take some 50 times the text's size, which made a file of a few hundred MB fill a laptop's memory."""
        reserve = 1 if self.pooling == "mask" else 0
        limit = self.max_length - reserve
        rows: list[dict] = []
        truncated = 0
        for start in range(0, len(texts), ENCODE_CHUNK):
            args = [list(texts[start:start + ENCODE_CHUNK])]
            if pairs is not None:
                args.append(list(pairs[start:start + ENCODE_CHUNK]))
            lengths = self.tokenizer(*args, truncation=False, return_attention_mask=False, return_length=True)["length"]
            truncated += sum(length > limit for length in lengths)
            encoded = self.tokenizer(*args, truncation=True, max_length=limit)
            keys = [key for key in self.keys if key in encoded]
            for index in range(len(args[0])):
                row = {key: array("i", encoded[key][index]) for key in keys}
                if reserve:  # the mask goes before the final separator
                    before_last = len(row["input_ids"]) - 1
                    row["input_ids"].insert(before_last, self.tokenizer.mask_token_id)
                    row["attention_mask"].insert(before_last, 1)
                    if "token_type_ids" in row:
                        row["token_type_ids"].insert(before_last, row["token_type_ids"][-1])
                rows.append(row)
        return rows, truncated

    def collate(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        """The model's inputs (a task's rows may hold more than those)."""
        width = max(len(row["input_ids"]) for row in rows)
        pad = {"input_ids": self.tokenizer.pad_token_id or 0, "attention_mask": 0, "token_type_ids": 0}
        batch = {}
        for key in (key for key in self.keys if key in rows[0]):
            values = np.full((len(rows), width), pad[key], dtype=np.int64)
            for index, row in enumerate(rows):
                values[index, :len(row[key])] = row[key]
            batch[key] = torch.from_numpy(values)
        return batch

    @staticmethod
    def collate_labels(rows: Sequence[dict], labels: Sequence) -> torch.Tensor:
        """Class ids (int64) or regression targets (float32) of the rows' examples."""
        return torch.tensor(list(labels), dtype=torch.float32 if isinstance(labels[0], float) else torch.long)


# --- a new linear head over named labels ------------------------------------------------------------------------
class LinearHeadTask(Task):
    """A task that trains a new linear layer mapping hidden states to its labels (classify reads one pooled state per
    example, tag every token): the same head, the same label names in a stock config, the same metrics' order."""

    def make_head(self, hidden_size, outputs, bias=True):
        head = nn.Linear(hidden_size, outputs, bias=bias)
        if bias:
            nn.init.zeros_(head.bias)
        nn.init.normal_(head.weight, std=0.02)
        return head

    def lower_is_better(self, metric):
        return metric in LOWER_IS_BETTER

    def stock_config(self, config, label_names):
        config.num_labels = len(label_names) if label_names else 1
        if label_names:
            config.id2label = dict(enumerate(label_names))
            config.label2id = {name: index for index, name in enumerate(label_names)}
        else:
            config.problem_type = "regression"
        return config
