"""Data files too big for this machine's memory: refused before reading, or, with a row limit, read in one
streaming pass that keeps a seeded uniform sample in file order, with memory bounded by the sample (measured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from jrft_desktop.core import data
from jrft_desktop.core.config import DataSpec
from jrft_desktop.core.tasks.classify import load_task_data
from jrft_desktop.core.errors import DataError
from jrft_desktop.core.paths import sample_data_dir

SENTENCES = [line.split("\t") for line in
             (sample_data_dir() / "sst2_train.tsv").read_text(encoding="utf-8").splitlines()[1:]]


def numbered_rows(count: int) -> list[tuple[str, str]]:
    """Real sentences, each prefixed with its row number so a sample can be traced back to its rows."""
    return [(f"{i} {SENTENCES[i % len(SENTENCES)][0]}", SENTENCES[i % len(SENTENCES)][1]) for i in range(count)]


def write(path: Path, rows, encoding: str = "utf-8") -> Path:
    suffix = path.suffix
    frame = pd.DataFrame(rows, columns=["sentence", "label"])
    if suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False, encoding=encoding)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path, row_group_size=5_000)
    return path


def row_numbers(texts) -> list[int]:
    return [int(text.split(" ", 1)[0]) for text in texts]


@pytest.fixture
def small_memory(monkeypatch):
    """A machine whose memory limit (half its memory) is 64 KB; and small chunks, so a test file spans many."""
    monkeypatch.setattr(data, "memory_limit", lambda: 64 * 1024)
    monkeypatch.setattr(data, "STREAM_CHUNK_ROWS", 1_000)


def test_too_big_without_a_row_limit_is_refused_before_reading(tmp_path, small_memory, monkeypatch):
    source = write(tmp_path / "big.tsv", numbered_rows(5_000))

    def never(*args, **kwargs):
        raise AssertionError("the file was read")

    monkeypatch.setattr(pd, "read_csv", never)
    with pytest.raises(DataError) as refused:
        load_task_data(DataSpec(train=str(source)), 0)
    size = source.stat().st_size
    assert str(refused.value) == (
        f"big.tsv ({size / 1024:,.1f} KB) is too big to load: training on it takes about "
        f"{20 * size / 2**20:,.1f} MB of memory, over this machine's limit of 64.0 KB (half its memory); set a row "
        "limit (max_train_rows, --max-train-rows N) to train on a seeded random sample read in one streaming pass, "
        "or split the file.")


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".parquet"])
def test_a_row_limit_streams_a_seeded_uniform_sample_in_file_order(suffix, tmp_path, small_memory):
    total = 12_000
    rows = numbered_rows(total)
    source = write(tmp_path / f"big{suffix}", rows)
    spec = DataSpec(train=str(source), max_train_rows=900, validation_fraction=0.1)
    first, again, other = (load_task_data(spec, seed) for seed in (0, 0, 1))

    assert (len(first.train), len(first.validation)) == (900, 100)  # 1,000 sampled, 10% held out
    assert first.train == again.train and first.validation == again.validation  # seeded
    assert first.train != other.train
    note = next(note for note in first.notes if "streaming pass" in note)
    assert f"kept a seeded random sample of 1,000 of its {total:,} rows" in note
    sampled = sorted(row_numbers(first.train.texts) + row_numbers(first.validation.texts))
    assert len(set(sampled)) == 1_000 and row_numbers(first.train.texts) == sorted(row_numbers(first.train.texts))
    for number, text, label in zip(row_numbers(first.train.texts), first.train.texts, first.train.labels):
        expected_text, expected_label = rows[number]
        assert text == expected_text and first.label_names[label] == expected_label
    # Uniform over the file: every tenth of it holds about a tenth of the sample (binomial sd is 9.5 rows).
    per_tenth = pd.Series(sampled).floordiv(total // 10).value_counts()
    assert len(per_tenth) == 10 and per_tenth.between(60, 140).all(), per_tenth.to_dict()


def test_a_latin1_file_is_streamed_as_latin1(tmp_path, small_memory):
    rows = numbered_rows(3_000)
    rows[2_500] = ("2500 un café très crème, à la française", "1")  # past the first chunks
    source = write(tmp_path / "big.tsv", rows, encoding="latin-1")
    loaded = load_task_data(DataSpec(train=str(source), max_train_rows=2_999, validation_fraction=0.01), 0)
    assert "big.tsv is not UTF-8; read it as cp1252." in loaded.notes
    assert "2500 un café très crème, à la française" in loaded.train.texts + loaded.validation.texts


MEASURE = """
import json, sys
from jrft_desktop.core import data
from jrft_desktop.core.config import DataSpec
from jrft_desktop.core.tasks.classify import load_task_data

def status_mb(field):  # VmHWM, the peak, restarts at exec (ru_maxrss would carry the parent's over)
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) / 1024

if sys.argv[2] == "stream":
    data.memory_limit = lambda: 1 << 20  # as on a machine too small for this file
before = status_mb("VmRSS")
loaded = load_task_data(DataSpec(train=sys.argv[1], max_train_rows=1000), 0)
print(json.dumps({"rows": len(loaded.train), "peak_growth_mb": status_mb("VmHWM") - before}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="measures with Linux's /proc")
def test_streaming_a_large_file_keeps_memory_bounded(tmp_path):
    """A 32 MB file (about 500,000 rows), sampled down to 1,000 rows: the process's peak memory grows by about a
    chunk's worth, whatever the file's size; reading it whole takes about 7 times its size as pandas strings."""
    source = tmp_path / "large.tsv"
    with open(source, "w", encoding="utf-8") as handle:
        handle.write("sentence\tlabel\n")
        number = 0
        while handle.tell() < 32 * 2**20:
            handle.writelines(f"{number + i} {text}\t{label}\n" for i, (text, label) in enumerate(SENTENCES))
            number += len(SENTENCES)
    measured = {}
    for how in ("stream", "whole"):
        done = subprocess.run([sys.executable, "-c", MEASURE, str(source), how], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr
        measured[how] = json.loads(done.stdout)
    print(f"a {source.stat().st_size / 2**20:.0f} MB file, peak memory growth: streamed sample "
          f"{measured['stream']['peak_growth_mb']:.1f} MB, read whole {measured['whole']['peak_growth_mb']:.1f} MB")
    assert measured["stream"]["rows"] == measured["whole"]["rows"] == 1000
    assert measured["stream"]["peak_growth_mb"] < 48  # the sample and one chunk (and pandas' parser buffers)
    assert measured["whole"]["peak_growth_mb"] > 150  # what the bound saves: ~7 bytes per byte of file
