"""Tables of examples from files, folders and dataset names, for every task.

Reads CSV, TSV, JSON, JSON Lines, Parquet and CoNLL files, folders (`train.*` files, with a `validation.*` / `dev.*` /
`test.*` companion, or a `datasets.save_to_disk` folder) and Hugging Face dataset names into a `Table`. Which
columns a task reads, and how it turns rows into examples, is the task's own (core/tasks/). Every problem a user
can fix is a one-line `DataError`.

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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from .errors import DataError, first_line
from .formatting import format_bytes
from .limits import memory_limit

DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
CONLL_SUFFIX = ".conll"
TEXT_SUFFIX = ".txt"  # plain text, one document per non-empty line (continued pretraining)
SUPPORTED_SUFFIXES = (*DELIMITERS, ".json", ".jsonl", ".ndjson", ".parquet", CONLL_SUFFIX, TEXT_SUFFIX)
TOKENS_COLUMN, TAGS_COLUMN = "tokens", "tags"  # the columns of a CoNLL file's table
TEXT_COLUMN = "text"  # the column of a plain-text file's table
_DOCSTART = "-DOCSTART-"
_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}

_VALIDATION_STEMS = ("validation", "dev", "test")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(:[\w.-]+)?")

_T = TypeVar("_T")

# Training takes about this many bytes of memory per byte of a text file: the texts as Python strings (~7) and
# their token ids (~10), measured on a 50 MB TSV of short sentences. Parquet is compressed: ~4 times more.
MEMORY_PER_FILE_BYTE = 20
PARQUET_EXPANSION = 4
STREAM_CHUNK_ROWS = 20_000



@dataclass(frozen=True)
class Sample:
    """Keep a seeded random sample of this many rows when a file is too big to read whole."""

    rows: int
    seed: int


@dataclass
class Table:
    frame: pd.DataFrame
    name: str  # short, for messages: "train.tsv"
    origin: str  # full, for records: "file /data/train.tsv"
    notes: list[str] = field(default_factory=list)
    companion: Table | None = None  # validation data found beside the training data
    class_names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # `datasets` ClassLabel columns' names


def read_table(source: str, limit: int | None = None) -> pd.DataFrame:
    """All columns of a file, folder (its training part) or `datasets` name; `limit` keeps the first rows.

    Facts about the reading (encoding fallback, delimiter) are in `frame.attrs["notes"]`."""
    table = open_table(source, limit=limit)
    table.frame.attrs["notes"] = tuple(table.notes)
    return table.frame


# --- opening sources ----------------------------------------------------------------------------------------


def open_table(source: str, limit: int | None = None, with_companion: bool = False,
          sample: Sample | None = None) -> Table:
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


def _read_file(path: Path, limit: int | None, sample: Sample | None = None) -> Table:
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
    elif suffix == CONLL_SUFFIX:
        frame = _with_encoding_fallback(lambda encoding: _read_conll(path, encoding, limit), path.name, notes)
    elif suffix == TEXT_SUFFIX:
        lines = [line.strip() for line in _decode(path, notes).splitlines()]
        frame = pd.DataFrame({TEXT_COLUMN: [line for line in lines if line][:limit]})
    elif suffix == ".json":
        frame = _json_frame(_decode(path, notes), path, notes)
        if limit is not None:
            frame = frame.head(limit)
    else:
        frame = _read_json_lines(path, limit, notes)
    if frame.shape[1] == 0:
        raise DataError(f"{path.name} holds no data.")
    return Table(frame, path.name, f"file {path.resolve()}", notes)


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
    if suffix == CONLL_SUFFIX:
        def conll(encoding: str) -> Iterator[pd.DataFrame]:
            with open(path, encoding=encoding) as handle:
                sentences = conll_sentences(handle, path.name)
                while chunk := list(itertools.islice(sentences, STREAM_CHUNK_ROWS)):
                    yield pd.DataFrame(chunk)

        return conll
    if suffix in (".json", TEXT_SUFFIX):
        kind = "one JSON document" if suffix == ".json" else "a text file"
        raise DataError(f"{path.name} ({format_bytes(path.stat().st_size)}) is too big to load whole, and {kind} "
                        "cannot be read in pieces; convert it to JSON Lines (one object per line) or CSV.")

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


def _sample_file(path: Path, sample: Sample, notes: list[str]) -> pd.DataFrame:
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


def conll_sentences(lines: Iterable[str], name: str) -> Iterator[dict[str, list[str]]]:
    """The sentences of a CoNLL file, one {tokens, tags} record each: a token per line, its tag in the line's last
    column (`token<TAB>tag` or `token tag`; columns between, such as CoNLL-2003's part of speech and chunk, are
    ignored), a blank or whitespace-only line between sentences, `-DOCSTART-` lines skipped. A file whose every line
    holds a token alone gives tokens without tags (to predict); a tag missing from some lines only is an error."""
    tokens: list[str] = []
    tags: list[str] = []
    tagged: bool | None = None  # whether the lines have tags, once the first token line is read
    for number, line in enumerate(lines, start=1):
        fields = [part.strip() for part in (line.split("\t") if "\t" in line else line.split()) if part.strip()]
        if fields and fields[0] == _DOCSTART:
            continue
        if not fields:
            if tokens:
                yield {TOKENS_COLUMN: tokens, TAGS_COLUMN: tags} if tagged else {TOKENS_COLUMN: tokens}
            tokens, tags = [], []
            continue
        if tagged is None:
            tagged = len(fields) > 1
        if tagged != (len(fields) > 1):
            raise DataError(f"Line {number} of {name} has {'a token but no tag' if tagged else 'more than a token'} "
                            f"({line.strip()!r}), unlike the lines before it; a CoNLL file has token<TAB>tag on every "
                            "line (or, to predict, the token alone on every line).")
        tokens.append(fields[0])
        tags.append(fields[-1])
    if tokens:
        yield {TOKENS_COLUMN: tokens, TAGS_COLUMN: tags} if tagged else {TOKENS_COLUMN: tokens}


def _read_conll(path: Path, encoding: str, limit: int | None) -> pd.DataFrame:
    with open(path, encoding=encoding) as handle:
        sentences = list(itertools.islice(conll_sentences(handle, path.name), limit))
    if not sentences:
        raise DataError(f"{path.name} holds no sentences (only blank or -DOCSTART- lines).")
    return pd.DataFrame(sentences)


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


def _open_folder(path: Path, limit: int | None, with_companion: bool, sample: Sample | None = None) -> Table:
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


def _open_hub(name: str, limit: int | None, with_companion: bool) -> Table:
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


def _datasets_table(loaded: Any, origin: str, limit: int | None, with_companion: bool) -> Table:
    import datasets

    companion = None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(f"{origin} has no 'train' split (splits: {', '.join(loaded)}).")
        split = next((stem for stem in _VALIDATION_STEMS if stem in loaded), None)
        if with_companion and split is not None:
            frame = loaded[split].to_pandas()
            companion = Table(frame, f"{origin} ({split} split)", f"split '{split}' of {origin}",
                              class_names=_class_names(loaded[split].features))
        loaded = loaded["train"]
    if limit is not None:
        loaded = loaded.select(range(min(limit, len(loaded))))
    notes = []
    for column, feature in loaded.features.items():
        if isinstance(feature, datasets.ClassLabel):
            names = ", ".join(f"{number}={name}" for number, name in enumerate(feature.names))
            notes.append(f"Column '{column}' holds class ids: {names}.")
    return Table(loaded.to_pandas(), f"{origin} (train split)", origin, notes, companion,
                 _class_names(loaded.features))


def _class_names(features) -> dict[str, tuple[str, ...]]:
    """The names of the ids in each ClassLabel column, or in each column of lists of ClassLabel ids (the tags of
    a `datasets` token-classification set such as conll2003's `ner_tags`)."""
    import datasets

    found = {}
    for column, feature in features.items():
        inner = getattr(feature, "feature", feature)  # Sequence / List(ClassLabel)
        inner = inner[0] if isinstance(inner, list) and len(inner) == 1 else inner
        if isinstance(inner, datasets.ClassLabel):
            found[column] = tuple(inner.names)
    return found


def require_column(frame: pd.DataFrame, column: str, name: str) -> None:
    if column in frame.columns:
        return
    available = [str(existing) for existing in frame.columns]
    close = difflib.get_close_matches(column, available, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else "."
    raise DataError(f"Column '{column}' not found in {name}{hint} Columns: {', '.join(available)}")


# --- rows and labels ----------------------------------------------------------------------------------------


def require_rows(table: Table) -> None:
    if len(table.frame) == 0:
        raise DataError(f"{table.name} has column names but no data rows.")


def blank(series: pd.Series) -> np.ndarray:
    return (series.isna() | series.astype(str).str.strip().eq("")).to_numpy(dtype=bool)


def is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def cell_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if is_missing(value):
        return ""
    return str(value)


