"""Labelled text data for sequence classification and regression.

Reads CSV, TSV, JSON, JSON Lines and Parquet files, folders (`train.*` files or a `datasets.save_to_disk`
folder) and Hugging Face dataset names; guesses the text, text-pair and label columns; maps labels to class
ids; and holds out a seeded validation split. Every problem a user can fix is a one-line `DataError`.

Memory: a file is read whole only when training on it fits in half this machine's memory (about 20 times the
file's size, measured). A bigger one is refused with a clear message, or, when the run asks for at most N
training rows, read in one streaming pass that keeps a seeded random sample of N rows (memory: the sample plus
one chunk)."""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from .config import DataSpec
from .errors import DataError, first_line
from .limits import format_bytes, memory_limit

CLASSIFICATION = "classification"
REGRESSION = "regression"

DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
SUPPORTED_SUFFIXES = (*DELIMITERS, ".json", ".jsonl", ".ndjson", ".parquet")
_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}

_LABEL_NAMES = ("label", "labels", "class", "category", "target", "y", "sentiment", "score")
_TEXT_NAMES = ("sentence", "text", "sentence1", "question", "premise", "content", "review", "document")
_PAIR_NAMES = (
    ("sentence1", "sentence2"),
    ("question", "sentence"),
    ("premise", "hypothesis"),
    ("text_a", "text_b"),
    ("question1", "question2"),
)
_VALIDATION_STEMS = ("validation", "dev", "test")
_MISSING_LABELS = frozenset({"nan", "-nan", "na", "n/a", "#n/a", "<na>", "null"})
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(:[\w.-]+)?")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")

_T = TypeVar("_T")

# Training takes about this many bytes of memory per byte of a text file: the texts as Python strings (~7) and
# their token ids (~10), measured on a 50 MB TSV of short sentences. Parquet is compressed: ~4 times more.
MEMORY_PER_FILE_BYTE = 20
PARQUET_EXPANSION = 4
STREAM_CHUNK_ROWS = 20_000



@dataclass(frozen=True)
class _Sample:
    """Keep a seeded random sample of this many rows when a file is too big to read whole."""

    rows: int
    seed: int


@dataclass(frozen=True)
class Examples:
    """Parallel texts, optional second texts and labels (class ids, floats, or empty when unlabelled)."""

    texts: tuple[str, ...]
    pairs: tuple[str, ...] | None
    labels: tuple[int, ...] | tuple[float, ...]

    def __post_init__(self) -> None:
        if self.pairs is not None and len(self.pairs) != len(self.texts):
            raise ValueError(f"{len(self.pairs)} pairs for {len(self.texts)} texts")
        if self.labels and len(self.labels) != len(self.texts):
            raise ValueError(f"{len(self.labels)} labels for {len(self.texts)} texts")

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TaskData:
    """Training and validation examples plus everything needed to read other files the same way."""

    train: Examples
    validation: Examples
    text_column: str
    text_pair_column: str | None
    label_column: str
    label_names: tuple[str, ...] | None
    task: str
    validation_source: str
    notes: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.label_names is not None else 1


@dataclass
class _Table:
    frame: pd.DataFrame
    name: str  # short, for messages: "train.tsv"
    origin: str  # full, for records: "file /data/train.tsv"
    notes: list[str] = field(default_factory=list)
    companion: _Table | None = None  # validation data found beside the training data


def read_table(source: str, limit: int | None = None) -> pd.DataFrame:
    """All columns of a file, folder (its training part) or `datasets` name; `limit` keeps the first rows.

    Facts about the reading (encoding fallback, delimiter) are in `frame.attrs["notes"]`."""
    table = _open(source, limit=limit)
    table.frame.attrs["notes"] = tuple(table.notes)
    return table.frame


def guess_columns(frame: pd.DataFrame) -> tuple[str, str | None, str]:
    """(text column, text-pair column or None, label column), guessed from the names and contents."""
    return _guess_columns(frame)


def load_task_data(spec: DataSpec, seed: int) -> TaskData:
    """Training and validation examples for `spec`; the split and the sampling are deterministic per seed."""
    if not 0 < spec.validation_fraction < 1:
        raise DataError(f"validation_fraction must be between 0 and 1 (exclusive), not {spec.validation_fraction}.")
    for name in ("max_train_rows", "max_validation_rows"):
        if getattr(spec, name) is not None and getattr(spec, name) < 1:
            raise DataError(f"{name} must be at least 1, not {getattr(spec, name)}.")
    if not spec.train:
        raise DataError("No training data given; choose a file, a folder or a dataset name.")

    validation_file = spec.validation or None
    sample = None
    if spec.max_train_rows is not None:  # used only for a file too big to read whole; the split comes after it
        share = 1.0 if validation_file is not None else 1.0 - spec.validation_fraction
        sample = _Sample(math.ceil(spec.max_train_rows / share), seed)
    table = _open(spec.train, with_companion=validation_file is None, sample=sample)
    notes = list(table.notes)
    _require_rows(table)
    text, pair, label = _resolve_columns(spec, table, notes)
    texts, pairs, raw_labels = _usable_rows(table, text, pair, label, notes)
    task, label_names, labels = _parse_labels(raw_labels, table.name, label)
    rng = np.random.default_rng(seed)

    held_out = _open(validation_file) if validation_file is not None else table.companion
    if held_out is not None:
        notes.extend(held_out.notes)
        if validation_file is None:
            notes.append(f"Validation data: {held_out.origin}, found beside the training data "
                         "(set a validation file to use another).")
        _require_rows(held_out)
        for column in (text, pair, label):
            if column is not None:
                _require_column(held_out.frame, column, held_out.name)
        val_texts, val_pairs, val_raw = _usable_rows(held_out, text, pair, label, notes)
        val_labels = (encode_labels(val_raw, label_names) if label_names is not None
                      else _floats(val_raw, held_out.name, label))
        validation = Examples(tuple(val_texts), tuple(val_pairs) if val_pairs is not None else None, val_labels)
        train_rows = np.arange(len(texts))
        validation_source = held_out.origin
    else:
        train_rows, val_rows = _split(np.asarray(labels), task, spec.validation_fraction, rng, table.name)
        validation = _select(texts, pairs, labels, val_rows)
        percent = f"{spec.validation_fraction * 100:g}%"
        kind = "stratified" if task == CLASSIFICATION else "random"
        validation_source = f"seeded {kind} {percent} split of train (seed {seed})"

    if spec.max_train_rows is not None and spec.max_train_rows < len(train_rows):
        notes.append(f"Sampled {spec.max_train_rows} of {len(train_rows)} training rows at random (seed {seed}).")
        train_rows = np.sort(rng.choice(train_rows, size=spec.max_train_rows, replace=False))
    if spec.max_validation_rows is not None and spec.max_validation_rows < len(validation.labels):
        notes.append(f"Sampled {spec.max_validation_rows} of {len(validation.labels)} validation rows at random "
                     f"(seed {seed}).")
        picked = np.sort(rng.choice(len(validation.labels), size=spec.max_validation_rows, replace=False))
        validation = _select(validation.texts, validation.pairs, validation.labels, picked)
        validation_source += f", a seeded sample of {spec.max_validation_rows} rows"

    return TaskData(
        train=_select(texts, pairs, labels, train_rows),
        validation=validation,
        text_column=text,
        text_pair_column=pair,
        label_column=label,
        label_names=label_names,
        task=task,
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
    table = _open(source)
    _require_rows(table)
    frame = table.frame
    _require_column(frame, text_column, table.name)
    if text_pair_column is not None:
        _require_column(frame, text_pair_column, table.name)
    texts = tuple(_cell_text(value) for value in frame[text_column].tolist())
    pairs = tuple(_cell_text(value) for value in frame[text_pair_column].tolist()) if text_pair_column else None

    labels: tuple[int, ...] | tuple[float, ...] = ()
    if label_column is not None and label_column in frame.columns:
        blank = _missing_label(frame[label_column])
        if blank.any() and not blank.all():
            first = int(np.flatnonzero(blank)[0]) + 1
            raise DataError(f"{int(blank.sum())} row(s) of {table.name} have an empty '{label_column}' (first at "
                            f"data row {first}); fill them in, or drop the column to predict without scoring.")
        if not blank.any():
            values = frame[label_column].tolist()
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


# --- opening sources ----------------------------------------------------------------------------------------


def _open(source: str, limit: int | None = None, with_companion: bool = False,
          sample: _Sample | None = None) -> _Table:
    if not source:
        raise DataError("No data source given; choose a file, a folder or a dataset name.")
    path = Path(source).expanduser()
    if path.is_dir():
        return _open_folder(path, limit, with_companion, sample)
    if path.is_file():
        return _read_file(path, limit, sample)
    if _HUB_NAME.fullmatch(source) and Path(source.split(":")[0]).suffix.lower() not in SUPPORTED_SUFFIXES:
        return _open_hub(source, limit, with_companion)
    raise DataError(f"No such file: {path}")


def _read_file(path: Path, limit: int | None, sample: _Sample | None = None) -> _Table:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"Cannot read {path.name}: unsupported file type '{suffix or path.name}'; "
                        f"use {', '.join(SUPPORTED_SUFFIXES)}, a folder or a `datasets` name.")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path.name} is empty.")
    notes: list[str] = []
    needed = size * MEMORY_PER_FILE_BYTE * (PARQUET_EXPANSION if suffix == ".parquet" else 1)
    budget = memory_limit()
    if limit is None and needed > budget:
        if sample is None:
            raise DataError(f"{path.name} ({format_bytes(size)}) is too big to load: training on it takes about "
                            f"{format_bytes(needed)} of memory, over this machine's limit of {format_bytes(budget)} "
                            "(half its memory); set a row limit (max_train_rows, --max-train-rows N) to train on a "
                            "seeded random sample read in one streaming pass, or split the file.")
        frame = _sample_file(path, sample, notes)
    elif suffix in DELIMITERS:
        frame = _read_delimited(path, DELIMITERS[suffix], limit, notes)
    elif suffix == ".parquet":
        frame = _read_parquet(path, limit)
    elif suffix == ".json":
        frame = _json_frame(_decode(path, notes), path, notes)
        if limit is not None:
            frame = frame.head(limit)
    else:
        frame = _read_json_lines(path, limit, notes)
    if frame.shape[1] == 0:
        raise DataError(f"{path.name} holds no data.")
    return _Table(frame, path.name, f"file {path.resolve()}", notes)


@contextmanager
def _csv_errors(path: Path, delimiter: str) -> Iterator[None]:
    """pandas' parsing problems as one-line `DataError`s."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            yield
    except pd.errors.EmptyDataError:
        raise DataError(f"{path.name} is empty.") from None
    except pd.errors.ParserWarning:
        raise DataError(f"Cannot parse {path.name}: its rows have more fields than its header; "
                        "check the delimiter and the quoting.") from None
    except pd.errors.ParserError as error:
        detail = first_line(error).split("C error: ")[-1].rstrip(".")
        raise DataError(f"Cannot parse {path.name}: {detail}. An unbalanced quote or an unquoted "
                        f"{_DELIMITER_NAMES[delimiter]} inside a field can cause this.") from None


def _delimited_options(path: Path, expected: str, notes: list[str]) -> tuple[dict, bool]:
    """pandas.read_csv options for a delimited file, and whether it is UTF-16 (no encoding fallback then)."""
    utf16 = _has_utf16_bom(path)
    delimiter = _sniff_delimiter(path, "utf-16" if utf16 else "utf-8-sig", expected, notes)
    return {"sep": delimiter, "dtype": str, "keep_default_na": False, "index_col": False}, utf16


def _read_delimited(path: Path, expected: str, limit: int | None, notes: list[str]) -> pd.DataFrame:
    options, utf16 = _delimited_options(path, expected, notes)

    def parse(encoding: str) -> pd.DataFrame:
        with _csv_errors(path, options["sep"]):
            return pd.read_csv(path, nrows=limit, encoding=encoding, **options)

    return parse("utf-16") if utf16 else _with_encoding_fallback(parse, path.name, notes)


def _chunks(path: Path, notes: list[str]) -> Callable[[str], Iterator[pd.DataFrame]]:
    """For a file read in pieces: a function from an encoding to the file's rows, STREAM_CHUNK_ROWS at a time."""
    suffix = path.suffix.lower()
    if suffix in DELIMITERS:
        options, _ = _delimited_options(path, DELIMITERS[suffix], notes)

        def delimited(encoding: str) -> Iterator[pd.DataFrame]:
            with _csv_errors(path, options["sep"]):
                yield from pd.read_csv(path, chunksize=STREAM_CHUNK_ROWS, encoding=encoding, **options)

        return delimited
    if suffix == ".parquet":
        def parquet(encoding: str) -> Iterator[pd.DataFrame]:
            from pyarrow import parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=STREAM_CHUNK_ROWS):
                yield batch.to_pandas()

        return parquet
    if suffix == ".json":
        raise DataError(f"{path.name} ({format_bytes(path.stat().st_size)}) is too big to load whole, and one JSON "
                        "document cannot be read in pieces; convert it to JSON Lines (one object per line) or CSV.")

    def json_lines(encoding: str) -> Iterator[pd.DataFrame]:
        with open(path, encoding=encoding) as handle:
            records = []
            for record in _json_records(handle, path.name):
                records.append(record)
                if len(records) == STREAM_CHUNK_ROWS:
                    yield pd.DataFrame(records)
                    records = []
            if records:
                yield pd.DataFrame(records)

    return json_lines


def _sample_file(path: Path, sample: _Sample, notes: list[str]) -> pd.DataFrame:
    """A seeded uniform random sample of `sample.rows` rows, in file order, read in one pass: each row draws a
    random key and the rows with the smallest keys are kept, so memory holds the sample and one chunk."""
    read_chunks = _chunks(path, notes)

    def read(encoding: str) -> tuple[pd.DataFrame, int]:
        rng = np.random.default_rng(sample.seed)
        kept, keys, total = None, np.empty(0), 0
        for chunk in read_chunks(encoding):
            chunk.index = pd.RangeIndex(total, total + len(chunk))
            total += len(chunk)
            frame = chunk if kept is None else pd.concat([kept, chunk], copy=False)
            keys = np.concatenate([keys, rng.random(len(chunk))])
            if len(frame) > sample.rows:
                best = np.argpartition(keys, sample.rows - 1)[:sample.rows]
                frame, keys = frame.iloc[best], keys[best]
            kept = frame
        if kept is None:
            raise DataError(f"{path.name} has column names but no data rows.")
        return kept.sort_index().reset_index(drop=True), total

    utf16 = path.suffix.lower() != ".parquet" and _has_utf16_bom(path)
    frame, total = read("utf-16") if utf16 else _with_encoding_fallback(read, path.name, notes)
    notes.append(f"{path.name} ({format_bytes(path.stat().st_size)}) is too big to load whole; read it in one "
                 f"streaming pass and kept a seeded random sample of {len(frame):,} of its {total:,} rows.")
    return frame


def _sniff_delimiter(path: Path, encoding: str, expected: str, notes: list[str]) -> str:
    """The extension's delimiter, unless the header line lacks it and has another one."""
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        header = handle.readline()
    counts = {delimiter: header.count(delimiter) for delimiter in _DELIMITER_NAMES}
    if counts[expected] == 0:
        found = max(counts, key=counts.__getitem__)
        if counts[found]:
            notes.append(f"{path.name} is {_DELIMITER_NAMES[found]}-separated, not "
                         f"{_DELIMITER_NAMES[expected]}-separated as its extension says; read it that way.")
            return found
    return expected


def _has_utf16_bom(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) in (b"\xff\xfe", b"\xfe\xff")


def _decode(path: Path, notes: list[str]) -> str:
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    return _with_encoding_fallback(data.decode, path.name, notes)


def _with_encoding_fallback(read: Callable[[str], _T], name: str, notes: list[str]) -> _T:
    """`read(encoding)` with UTF-8, else Windows-1252, else Latin-1 (which decodes any bytes), noting a fallback."""
    try:
        return read("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        result, encoding = read("cp1252"), "cp1252"
    except UnicodeDecodeError:
        result, encoding = read("latin-1"), "latin-1"
    notes.append(f"{name} is not UTF-8; read it as {encoding}.")
    return result


def _json_frame(text: str, path: Path, notes: list[str]) -> pd.DataFrame:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":
            notes.append(f"{path.name} holds JSON Lines (one object per line); read it that way.")
            return pd.DataFrame(list(_json_records(text.splitlines(), path.name)))
        raise DataError(f"{path.name} is not valid JSON: {error.msg} at line {error.lineno}, "
                        f"column {error.colno}.") from None
    try:
        if isinstance(data, list):
            if not all(isinstance(item, dict) for item in data):
                raise DataError(f"{path.name} must be an array of objects (one per row).")
            return pd.DataFrame(data)
        if isinstance(data, dict):
            if {"columns", "data"} <= data.keys():
                return pd.DataFrame(data["data"], columns=data["columns"])
            if all(not isinstance(value, (list, dict)) for value in data.values()):
                return pd.DataFrame([data])
            return pd.DataFrame(data)
    except ValueError as error:
        raise DataError(f"Cannot read {path.name} as a table ({first_line(error)}); "
                        "use an array of objects or JSON Lines.") from None
    raise DataError(f"{path.name} must be an array of objects (one per row), not a single JSON value.")


def _json_records(lines: Iterable[str], name: str) -> Iterator[dict]:
    """The objects of JSON Lines, one per non-empty line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"Line {number} of {name} is not valid JSON: {error.msg}.") from None
        if not isinstance(record, dict):
            raise DataError(f"Line {number} of {name} is not a JSON object.")
        yield record


def _read_json_lines(path: Path, limit: int | None, notes: list[str]) -> pd.DataFrame:
    """A JSON Lines file, read line by line (a preview of a huge file reads only its first lines)."""
    def read(encoding: str) -> pd.DataFrame:
        with open(path, encoding=encoding) as handle:
            return pd.DataFrame(list(itertools.islice(_json_records(handle, path.name), limit)))

    return read("utf-16") if _has_utf16_bom(path) else _with_encoding_fallback(read, path.name, notes)


def _read_parquet(path: Path, limit: int | None) -> pd.DataFrame:
    import pyarrow
    from pyarrow import parquet

    try:
        if limit is None:
            return pd.read_parquet(path)
        file = parquet.ParquetFile(path)
        first = next(file.iter_batches(batch_size=max(limit, 1)), None)
        table = pyarrow.Table.from_batches([first]) if first is not None else file.schema_arrow.empty_table()
        return table.to_pandas().head(limit)
    except (OSError, ValueError, pyarrow.ArrowException) as error:
        raise DataError(f"Cannot read {path.name} as Parquet: {first_line(error)}") from None


def _open_folder(path: Path, limit: int | None, with_companion: bool, sample: _Sample | None = None) -> _Table:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        import datasets

        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as error:  # noqa: BLE001 - a damaged folder fails in many ways inside `datasets`
            raise DataError(f"Cannot load the datasets folder {path}: {first_line(error)}") from None
        return _datasets_table(loaded, f"datasets folder {path.resolve()}", limit, with_companion)

    train = _file_named(path, "train")
    if train is None:
        raise DataError(f"Folder {path} has no train file (train.csv, train.tsv, train.jsonl, ...) and was not "
                        "saved with datasets' save_to_disk.")
    table = _read_file(train, limit, sample)
    if with_companion:
        held_out = next((found for stem in _VALIDATION_STEMS if (found := _file_named(path, stem))), None)
        if held_out is not None:
            table.companion = _read_file(held_out, None)
    return table


def _file_named(folder: Path, stem: str) -> Path | None:
    found = [folder / f"{stem}{suffix}" for suffix in SUPPORTED_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    if len(found) > 1:
        raise DataError(f"Folder {folder} has several {stem} files ({', '.join(p.name for p in found)}); "
                        "give one of them.")
    return found[0] if found else None


def _open_hub(name: str, limit: int | None, with_companion: bool) -> _Table:
    import datasets

    dataset_name, _, config = name.partition(":")
    try:
        loaded = datasets.load_dataset(dataset_name, config or None)
    except ConnectionError:
        raise DataError(f"No file or folder '{name}', and dataset '{name}' is not in the local Hugging Face cache "
                        "and the hub cannot be reached; download it once online or give a file.") from None
    except datasets.exceptions.DatasetNotFoundError:
        raise DataError(f"No file or folder '{name}', and no dataset '{name}' on the Hugging Face hub.") from None
    except Exception as error:  # noqa: BLE001 - `datasets` raises many kinds (bad config, missing builder)
        raise DataError(f"Cannot load dataset '{name}': {first_line(error)}") from None
    return _datasets_table(loaded, f"hub dataset '{name}'", limit, with_companion)


def _datasets_table(loaded: Any, origin: str, limit: int | None, with_companion: bool) -> _Table:
    import datasets

    companion = None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(f"{origin} has no 'train' split (splits: {', '.join(loaded)}).")
        split = next((stem for stem in _VALIDATION_STEMS if stem in loaded), None)
        if with_companion and split is not None:
            frame = loaded[split].to_pandas()
            companion = _Table(frame, f"{origin} ({split} split)", f"split '{split}' of {origin}")
        loaded = loaded["train"]
    if limit is not None:
        loaded = loaded.select(range(min(limit, len(loaded))))
    notes = []
    for column, feature in loaded.features.items():
        if isinstance(feature, datasets.ClassLabel):
            names = ", ".join(f"{number}={name}" for number, name in enumerate(feature.names))
            notes.append(f"Column '{column}' holds class ids: {names}.")
    return _Table(loaded.to_pandas(), f"{origin} (train split)", origin, notes, companion)


# --- columns ------------------------------------------------------------------------------------------------


def _resolve_columns(spec: DataSpec, table: _Table, notes: list[str]) -> tuple[str, str | None, str]:
    frame = table.frame
    if frame.shape[1] < 2:
        raise DataError(f"{table.name} has a single column ('{frame.columns[0]}') but needs a text column and a "
                        "label column; if it has more, its delimiter looks wrong.")
    given_text = spec.text_column or None
    given_pair = spec.text_pair_column or None
    given_label = spec.label_column or None
    for column in (given_text, given_pair, given_label):
        if column is not None:
            _require_column(frame, column, table.name)
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


def _require_column(frame: pd.DataFrame, column: str, name: str) -> None:
    if column in frame.columns:
        return
    available = [str(existing) for existing in frame.columns]
    close = difflib.get_close_matches(column, available, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else "."
    raise DataError(f"Column '{column}' not found in {name}{hint} Columns: {', '.join(available)}")


# --- rows and labels ----------------------------------------------------------------------------------------


def _require_rows(table: _Table) -> None:
    if len(table.frame) == 0:
        raise DataError(f"{table.name} has column names but no data rows.")


def _usable_rows(table: _Table, text: str, pair: str | None, label: str,
                 notes: list[str]) -> tuple[list[str], list[str] | None, list[Any]]:
    """Texts, pairs and raw labels of the rows that have a label and a text; drops the others with a note."""
    frame = table.frame
    blank_label = _missing_label(frame[label])
    if blank_label.all():
        raise DataError(f"Column '{label}' of {table.name} is empty in every row (blank or NaN), so there is nothing "
                        "to learn; choose the column that holds the labels.")
    empty_text = _blank(frame[text]) | (_blank(frame[pair]) if pair is not None else False)
    if blank_label.any():
        notes.append(f"Dropped {int(blank_label.sum())} row(s) of {table.name} with an empty '{label}'.")
    empty_only = empty_text & ~blank_label
    if empty_only.any():
        columns = f"'{text}'" + (f" or '{pair}'" if pair is not None else "")
        notes.append(f"Dropped {int(empty_only.sum())} row(s) of {table.name} with an empty {columns}.")
    kept = frame[~(blank_label | empty_text)]
    if len(kept) == 0:
        raise DataError(f"No rows of {table.name} have both a text and a label.")
    texts = [_cell_text(value) for value in kept[text].tolist()]
    pairs = [_cell_text(value) for value in kept[pair].tolist()] if pair is not None else None
    return texts, pairs, kept[label].tolist()


def _blank(series: pd.Series) -> np.ndarray:
    return (series.isna() | series.astype(str).str.strip().eq("")).to_numpy(dtype=bool)


def _missing_label(series: pd.Series) -> np.ndarray:
    """Blank labels, and the spellings of a missing value that spreadsheets and pandas write ("NaN", "NULL", ...);
    read as text they would silently become a class of their own."""
    return _blank(series) | series.astype(str).str.strip().str.lower().isin(_MISSING_LABELS).to_numpy(dtype=bool)


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _cell_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if _is_missing(value):
        return ""
    return str(value)


def _parse_labels(raw: list[Any], name: str, column: str) -> tuple[str, tuple[str, ...] | None, tuple]:
    """(task, label names, labels): integer-valued numbers and strings are classes, other numbers regression."""
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
    if _is_missing(value):
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


def _split(labels: np.ndarray, task: str, fraction: float, rng: np.random.Generator,
           name: str) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows), both sorted; classification keeps every class's share."""
    if task == REGRESSION:
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


def _select(texts: list[str], pairs: list[str] | None, labels: tuple, rows: np.ndarray) -> Examples:
    return Examples(
        tuple(texts[row] for row in rows),
        tuple(pairs[row] for row in rows) if pairs is not None else None,
        tuple(labels[row] for row in rows),
    )

