"""Bad input, table-driven, through the `jrft` CLI and (where one exists) the core call behind it.

Every case must end with exit status 2, exactly one non-empty line on stderr, no traceback, and nothing new on
disk (no half-made run folder, merged folder or temporary file). A few inputs that look wrong but are usable
(a Latin-1 file, a file with another delimiter than its extension says, texts longer than the max length) must
work, with a note in the progress output.

The matrix runs the CLI in-process (`jrft_desktop.cli.main`, the same code the `jrft` script runs) to stay fast;
a few cases run again in a real subprocess to hold the process-level contract (exit status, raw stderr)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
from file_faults import fill_the_disk, read_only

from jrft_desktop.cli import main
from jrft_desktop.core import data, limits, methods, runs
from jrft_desktop.core.config import TrainingSpec, DataSpec, MethodSpec, ModelSpec, Privacy, RunConfig
from jrft_desktop.core.tasks.classify import load_examples, load_task_data
from jrft_desktop.core.tasks.tag import load_tag_data
from jrft_desktop.core.errors import ArtifactError, DataError, ModelError, UserError
from jrft_desktop.core.export.vector import read_vector, restore
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.paths import sample_data_dir
from jrft_desktop.core.train.loop import Trainer

FAST = ["--max-steps", "2", "--max-length", "32", "--batch-size", "8"]


# --- inputs -------------------------------------------------------------------------------------------------


def _rows(count: int = 150) -> list[tuple[str, str]]:
    lines = (sample_data_dir() / "sst2_train.tsv").read_text(encoding="utf-8").splitlines()[1:count + 1]
    return [tuple(line.split("\t")) for line in lines]


def _tsv(path: Path, rows, header: str = "sentence\tlabel", sep: str = "\t") -> Path:
    path.write_text("\n".join([header.replace("\t", sep), *(sep.join(row) for row in rows)]) + "\n",
                    encoding="utf-8")
    return path


class _OpensAFile:
    """Unpickling this creates `marker`: proof that a vector file was unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_models):
    """Read-only inputs shared by the cases (never written by a case)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    rows = _rows()
    files = SimpleNamespace(root=root, bert=tiny_models["bert"])
    files.good = _tsv(root / "good.tsv", rows)
    files.empty = root / "empty.tsv"
    files.empty.write_bytes(b"")
    files.header_only = _tsv(root / "header_only.tsv", [])
    files.semicolon = _tsv(root / "semicolon.tsv", rows, sep=";")
    files.spaces = _tsv(root / "spaces.tsv", rows, sep=" ")
    latin = [("un café très crème, à la française", "1"), ("naïve, déjà vu, señor", "0"), *rows]
    files.latin1 = root / "latin1.tsv"
    files.latin1.write_bytes(("sentence\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in latin)).encode("latin-1"))
    files.blank_labels = _tsv(root / "blank_labels.tsv", [(text, "") for text, _ in rows])
    files.nan_labels = _tsv(root / "nan_labels.tsv", [(text, ("NaN", "null", "N/A")[i % 3]) for i, (text, _) in
                                                      enumerate(rows)])
    files.some_nan = _tsv(root / "some_nan.tsv", [(text, "NaN" if i % 5 == 0 else label) for i, (text, label) in
                                                  enumerate(rows)])
    files.other_columns = _tsv(root / "other_columns.tsv", rows[:20], header="review\tlabel")
    files.good_json = root / "good.json"
    files.good_json.write_text(json.dumps([{"sentence": text, "label": label} for text, label in rows]),
                               encoding="utf-8")
    files.one_class = _tsv(root / "one_class.tsv", [(text, "1") for text, _ in rows])
    files.unseen_validation = _tsv(root / "unseen_validation.tsv",
                                   [(text, "positive" if i % 2 else "7") for i, (text, _) in enumerate(rows[:20])])
    files.long = _tsv(root / "long.tsv", [(" ".join([text] * 8), label) for text, label in rows])
    files.unlabelled = _tsv(root / "unlabelled.tsv", [(text,) for text, _ in rows[:10]], header="sentence")
    # token data (the tag task): 30 good sentences, then one bad row
    sentences = [{"tokens": text.split()[:12], "tags": ["B-person"] + ["O"] * (len(text.split()[:12]) - 1)}
                 for text, _ in rows[:30]]
    for name, bad in (("flat_tags", {"tokens": ["Bob", "left"], "tags": "B-person O"}),
                      ("ragged_tags", {"tokens": ["Bob", "left"], "tags": ["B-person"]}),
                      ("empty_sentence", {"tokens": [], "tags": []}), ("tagged", None)):
        lines = [json.dumps(row) for row in sentences] + ([json.dumps(bad)] if bad else [])
        (root / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        setattr(files, name, root / f"{name}.jsonl")
    files.unknown_tag = root / "unknown_tag.conll"
    files.unknown_tag.write_text("Paris\tB-place\nis\tO\n\nBob\tB-person\n", encoding="utf-8")
    files.one_column = root / "one_column.conll"
    files.one_column.write_text("Alice\nleft\n\nBob\nstayed\n", encoding="utf-8")

    files.no_config = root / "no-config-model"
    files.no_config.mkdir()
    (files.no_config / "model.safetensors").write_bytes(b"")
    files.t5 = root / "t5-model"  # an encoder-decoder: no family of the app's
    from transformers import T5Config, T5Model

    T5Model(T5Config(d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2, vocab_size=64)).save_pretrained(files.t5)
    files.no_tokenizer = root / "no-tokenizer-model"
    files.no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(files.bert / name, files.no_tokenizer / name)
    from tiny_models import build_tiny_model

    files.other_bert = build_tiny_model("bert", root / "other-bert", seed=1)
    files.pickled_weights = root / "pickled-weights-model"  # pytorch_model.bin that would run code if unpickled
    files.pickled_weights.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(files.bert / name, files.pickled_weights / name)
    files.weights_marker = root / "weights-unpickled.marker"
    (files.pickled_weights / "pytorch_model.bin").write_bytes(
        pickle.dumps({"bert.embeddings.word_embeddings.weight": _OpensAFile(str(files.weights_marker))}))

    # A finished run (cls pooling, so it can export), trained once for the vector cases.
    files.run = root / "trained-run"
    status = main(["train", "--data", str(files.good), "--model", str(files.bert), "--pooling", "cls",
                   "--d", "64", *FAST, "--output", str(files.run)])
    assert status == 0 and (files.run / "metrics.json").is_file()
    files.mean_run = root / "mean-run"
    status = main(["train", "--data", str(files.good), "--model", str(files.bert), "--pooling", "mean",
                   "--method", "bitfit", *FAST, "--output", str(files.mean_run)])
    assert status == 0
    for name, extra in (("mask_run", ["--pooling", "mask", "--d", "16"]), ("warp_run", ["--method", "warp"])):
        setattr(files, name, root / name)
        assert main(["train", "--data", str(files.good), "--model", str(files.bert), *extra, *FAST,
                     "--output", str(root / name)]) == 0
    return files


# --- running and checking -----------------------------------------------------------------------------------


def run_cli(argv: list[str], capfd) -> tuple[int, str, str]:
    capfd.readouterr()
    try:
        status = main(argv)
    except SystemExit as stop:  # argparse errors
        status = stop.code
    out, err = capfd.readouterr()
    return status, out, err


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` with its content hash (folders as 'dir'), to prove nothing changed."""
    state = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        state[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def assert_one_line_user_error(status: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") or ": error: " in lines[0], lines[0]
    return lines[0]


@dataclass
class Case:
    name: str
    argv: Callable[[SimpleNamespace], list[str]]  # built from the inputs and this case's work folder
    expect: tuple[str, ...]  # pieces of the one line the user sees
    core: Callable[[SimpleNamespace], object] | None = None  # the core call, which must raise `error`
    error: type[UserError] = UserError
    prepare: Callable[[SimpleNamespace], None] = field(default=lambda ctx: None)  # set up the work folder


def _train(ctx, data, *extra, output=None) -> list[str]:
    return ["train", "--data", str(data), "--model", str(ctx.inputs.bert), *FAST, *extra,
            "--output", str(output or ctx.out)]


def _spec(ctx, data, **changes) -> DataSpec:
    return DataSpec(train=str(data), max_length=32, **changes)


def _trainer(ctx, output=None, **sections) -> object:
    parts = {"data": _spec(ctx, ctx.inputs.good), "model": ModelSpec(name_or_path=str(ctx.inputs.bert)),
             "training": TrainingSpec(max_steps=2, batch_size=8), **sections}
    config = RunConfig(**parts)
    return Trainer(config, output or ctx.out).run()


def _copy_run(ctx) -> None:
    shutil.copytree(ctx.inputs.run, ctx.work / "run")


def _edit_tensors(ctx) -> None:
    """Change one value of the trained vector, keeping its header (metadata and recorded SHA-256)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    _copy_run(ctx)
    path = ctx.work / "run" / "vector.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 0.5
    save_file(tensors, str(path), metadata=header)


def _edit_json(ctx) -> None:
    import json

    _copy_run(ctx)
    path = ctx.work / "run" / "vector.json"
    metadata = json.loads(path.read_text(encoding="utf-8"))
    metadata["label_names"] = ["negative", "positive"]
    path.write_text(json.dumps(metadata), encoding="utf-8")


def _edit_both_metadata_copies(ctx) -> None:
    """Relabel the classes in the header and in vector.json alike, keeping the tensors and their SHA-256."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    _copy_run(ctx)
    path = ctx.work / "run" / "vector.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads(handle.metadata()["jrft"])
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    metadata["label_names"] = ["positive", "negative"]  # swapped: every prediction would be reported wrongly
    save_file(tensors, str(path), metadata={"jrft": json.dumps(metadata, sort_keys=True)})
    (ctx.work / "run" / "vector.json").write_text(json.dumps(metadata), encoding="utf-8")


def _low_memory(ctx) -> None:
    """This machine's memory limit, as seen by the data loader, below what the (small) test file needs."""
    ctx.monkeypatch.setattr(data, "memory_limit", lambda: 64 * 1024)


def _eight_gb(ctx) -> None:
    """A machine with 16 GB of memory (its limit is half), whatever this one has."""
    ctx.monkeypatch.setattr(limits, "memory_limit", lambda: 8 * 2**30)


def _full_disk(ctx) -> None:
    fill_the_disk(ctx.monkeypatch)


def _output_is_a_file(ctx) -> None:
    (ctx.work / "taken").write_text("not a folder", encoding="utf-8")


def _pickle_vector(ctx) -> None:
    ctx.marker = ctx.work / "unpickled.marker"
    (ctx.work / "vector.safetensors").write_bytes(pickle.dumps(_OpensAFile(str(ctx.marker))))
    (ctx.work / "vector.pkl").write_bytes(pickle.dumps(_OpensAFile(str(ctx.marker))))


def _torch_save_vector(ctx) -> None:
    import torch

    torch.save({"z": torch.zeros(4)}, ctx.work / "vector.pt")


CASES = [
    Case("missing data file", lambda c: _train(c, c.inputs.root / "nope.tsv"), ("No such file", "nope.tsv"),
         lambda c: load_task_data(_spec(c, c.inputs.root / "nope.tsv"), 0), DataError),
    Case("empty file", lambda c: _train(c, c.inputs.empty), ("empty.tsv is empty",),
         lambda c: load_task_data(_spec(c, c.inputs.empty), 0), DataError),
    Case("header only", lambda c: _train(c, c.inputs.header_only), ("no data rows",),
         lambda c: load_task_data(_spec(c, c.inputs.header_only), 0), DataError),
    Case("wrong delimiter (spaces, not tabs)", lambda c: _train(c, c.inputs.spaces),
         ("single column", "delimiter"), lambda c: load_task_data(_spec(c, c.inputs.spaces), 0), DataError),
    Case("misspelt column", lambda c: _train(c, c.inputs.good, "--text-column", "sentense"),
         ("'sentense' not found", "did you mean 'sentence'"),
         lambda c: load_task_data(_spec(c, c.inputs.good, text_column="sentense"), 0), DataError),
    Case("misspelt label column", lambda c: _train(c, c.inputs.good, "--label-column", "lable"),
         ("did you mean 'label'",),
         lambda c: load_task_data(_spec(c, c.inputs.good, label_column="lable"), 0), DataError),
    Case("blank labels in every row", lambda c: _train(c, c.inputs.blank_labels), ("empty in every row",),
         lambda c: load_task_data(_spec(c, c.inputs.blank_labels), 0), DataError),
    Case("a single class", lambda c: _train(c, c.inputs.one_class), ("at least two classes", "'1'"),
         lambda c: load_task_data(_spec(c, c.inputs.one_class), 0), DataError),
    Case("validation labels unseen in training",
         lambda c: _train(c, c.inputs.good, "--validation", str(c.inputs.unseen_validation)),
         ("did not occur in the training data", "'7'", "'positive'"),
         lambda c: load_task_data(_spec(c, c.inputs.good, validation=str(c.inputs.unseen_validation)), 0),
         DataError),
    Case("missing column (validation file without the text column)",
         lambda c: _train(c, c.inputs.good, "--validation", str(c.inputs.other_columns)),
         ("Column 'sentence' not found in other_columns.tsv", "Columns: review, label"),
         lambda c: load_task_data(_spec(c, c.inputs.good, validation=str(c.inputs.other_columns)), 0), DataError),
    Case("NaN labels in every row", lambda c: _train(c, c.inputs.nan_labels), ("empty in every row (blank or NaN)",),
         lambda c: load_task_data(_spec(c, c.inputs.nan_labels), 0), DataError),
    Case("evaluation labels unseen in training",
         lambda c: ["eval", str(c.inputs.run), "--data", str(c.inputs.unseen_validation)],
         ("did not occur in the training data", "'7'", "'positive'", "known labels: '0', '1'"),
         lambda c: load_examples(str(c.inputs.unseen_validation), "sentence", None, "label", ("0", "1")), DataError),
    Case("file too big for memory", lambda c: _train(c, c.inputs.good),
         ("good.tsv (", "is too big to load", "--max-train-rows N", "streaming pass"),
         lambda c: load_task_data(_spec(c, c.inputs.good), 0), DataError, _low_memory),
    Case("JSON document too big for memory, even with a row limit",
         lambda c: _train(c, c.inputs.good_json, "--max-train-rows", "50"),
         ("one JSON document cannot be read in pieces", "JSON Lines"),
         lambda c: load_task_data(_spec(c, c.inputs.good_json, max_train_rows=50), 0), DataError, _low_memory),
    Case("model folder that does not exist", lambda c: _train(c, c.inputs.good, "--model", str(c.work / "gone")),
         ("does not exist",), lambda c: load_backbone(ModelSpec(name_or_path=str(c.work / "gone"))), ModelError),
    Case("folder without config.json", lambda c: _train(c, c.inputs.good, "--model", str(c.inputs.no_config)),
         ("no config.json",), lambda c: load_backbone(ModelSpec(name_or_path=str(c.inputs.no_config))),
         ModelError),
    Case("unsupported architecture (T5)", lambda c: _train(c, c.inputs.good, "--model", str(c.inputs.t5)),
         ("'t5' model", "supported families", "bert", "gpt2", "llama", "qwen2"),
         lambda c: load_backbone(ModelSpec(name_or_path=str(c.inputs.t5))), ModelError),
    Case("model folder without a tokenizer",
         lambda c: _train(c, c.inputs.good, "--model", str(c.inputs.no_tokenizer)), ("has no tokenizer",),
         lambda c: load_backbone(ModelSpec(name_or_path=str(c.inputs.no_tokenizer))), ModelError),
    Case("model weights that are a pickle of Python objects",
         lambda c: _train(c, c.inputs.good, "--model", str(c.inputs.pickled_weights)),
         ("are a pickle holding Python objects", "never loads", "safetensors"),
         lambda c: load_backbone(ModelSpec(name_or_path=str(c.inputs.pickled_weights))), ModelError),
    Case("malformed hub id", lambda c: _train(c, c.inputs.good, "--model", "not a valid id!"),
         ("'not a valid id!' is neither a model folder here nor a valid Hugging Face Hub id", "'org/model-name'"),
         lambda c: load_backbone(ModelSpec(name_or_path="not a valid id!")), ModelError),
    Case("hub id with too many parts", lambda c: _train(c, c.inputs.good, "--model", "org/name/extra"),
         ("it is not a Hugging Face Hub id",),
         lambda c: load_backbone(ModelSpec(name_or_path="org/name/extra")), ModelError),
    Case("offline hub id", lambda c: _train(c, c.inputs.good, "--model", "some-org/some-model"),
         ("'some-org/some-model'", "Hub cannot be reached"),
         lambda c: load_backbone(ModelSpec(name_or_path="some-org/some-model")), ModelError),
    Case("vector made for another base model",
         lambda c: ["apply", str(c.inputs.run / "vector.safetensors"), "--model", str(c.inputs.other_bert),
                    "--output", str(c.out)],
         ("trained on another base model",),
         lambda c: restore(c.inputs.run / "vector.safetensors", str(c.inputs.other_bert)), ArtifactError),
    Case("vector whose tensors were edited", lambda c: ["predict", str(c.work / "run"), "a fine film"],
         ("do not match their recorded SHA-256",), lambda c: read_vector(c.work / "run" / "vector.safetensors"),
         ArtifactError, _edit_tensors),
    Case("vector whose JSON was edited", lambda c: ["eval", str(c.work / "run"), "--data", str(c.inputs.good)],
         ("vector.json does not match", "edited"), lambda c: read_vector(c.work / "run" / "vector.safetensors"),
         ArtifactError, _edit_json),
    Case("vector whose metadata was edited in both copies",
         lambda c: ["predict", str(c.work / "run"), "a fine film"],
         ("metadata of vector.safetensors does not match its recorded SHA-256",),
         lambda c: read_vector(c.work / "run" / "vector.safetensors"), ArtifactError, _edit_both_metadata_copies),
    Case("pickle file given as a vector (.safetensors name)",
         lambda c: ["apply", str(c.work / "vector.safetensors"), "--output", str(c.out)],
         ("not a safetensors vector file",), lambda c: read_vector(c.work / "vector.safetensors"), ArtifactError,
         _pickle_vector),
    Case("pickle file given as a vector (.pkl name)", lambda c: ["predict", str(c.work / "vector.pkl"), "hi"],
         ("not a safetensors vector file",), lambda c: read_vector(c.work / "vector.pkl"), ArtifactError,
         _pickle_vector),
    Case("torch.save file given as a vector", lambda c: ["predict", str(c.work / "vector.pt"), "hi"],
         ("not a safetensors vector file",), lambda c: read_vector(c.work / "vector.pt"), ArtifactError,
         _torch_save_vector),
    Case("more WARP prompt tokens than the model has positions",
         lambda c: _train(c, c.inputs.good, "--method", "warp", "--prompt-tokens", "600"),
         ("600 prompt tokens leave 0 of this model's 128 positions for the text", "at most 120 prompt tokens"),
         lambda c: _trainer(c, method=MethodSpec(name="warp", prompt_tokens=600)), ModelError),
    Case("--d 0", lambda c: _train(c, c.inputs.good, "--d", "0"), ("d must be a positive whole number",),
         lambda c: _trainer(c, method=MethodSpec(d=0))),
    Case("--d absurdly large (z)", lambda c: _train(c, c.inputs.good, "--d", str(10**12)),
         ("Training slash with d = 1,000,000,000,000 would take about 14.6 TB of memory",
          "over this machine's limit of 8.0 GB", "use a smaller d"),
         lambda c: _trainer(c, method=MethodSpec(d=10**12)), UserError, _eight_gb),
    Case("--d absurdly large (projections)", lambda c: _train(c, c.inputs.good, "--d", str(10**8)),
         ("random projections of slash for d = 100,000,000 would take about 35.8 GB", "use a smaller d"),
         lambda c: _trainer(c, method=MethodSpec(d=10**8)), UserError, _eight_gb),
    Case("--budget 0", lambda c: _train(c, c.inputs.good, "--budget", "0", "--method", "jr-warp"),
         ("must be a positive whole number",), lambda c: _trainer(c, method=MethodSpec(name="jr-warp", budget=0))),
    Case("unknown method", lambda c: _train(c, c.inputs.good, "--method", "lroa"),
         ("Unknown method 'lroa'", "Did you mean 'lora'"), lambda c: methods.get_method("lroa")),
    Case("output folder already holds a run", lambda c: _train(c, c.inputs.good, output=c.work / "run"),
         ("already holds a run", "--resume"),
         lambda c: runs.prepare_run_dir(c.work / "run", RunConfig(), resume=False), ArtifactError, _copy_run),
    Case("full output folder (disk full)", lambda c: _train(c, c.inputs.good), ("the disk is full",),
         lambda c: _trainer(c), ArtifactError, _full_disk),
    Case("output path is a file", lambda c: _train(c, c.inputs.good, output=c.work / "taken"),
         ("taken is a file, not a folder",), lambda c: _trainer(c, output=c.work / "taken"), ArtifactError,
         _output_is_a_file),
    Case("resume without a run", lambda c: ["train", "--resume", "--output", str(c.out)], ("Nothing to resume",),
         lambda c: runs.prepare_run_dir(c.out, None, resume=True), ArtifactError),
    Case("resume a finished run", lambda c: ["train", "--resume", "--output", str(c.work / "run")],
         ("already finished",), lambda c: runs.prepare_run_dir(c.work / "run", None, resume=True), ArtifactError,
         _copy_run),
    Case("merged export into the run folder itself",
         lambda c: ["export", str(c.work / "run"), "--merged", str(c.work / "run")],
         ("already exists and is not an earlier merged export",), None, UserError, _copy_run),
    Case("mean-pooled run exported as a stock transformers classifier",
         lambda c: ["export", str(c.inputs.mean_run), "--merged", str(c.out), "--format", "transformers"],
         ("reads the mean pooling", "cannot compute", "export it as a sentence-transformers folder or as ONNX")),
    Case("mask-pooled run exported as a sentence-transformers folder",
         lambda c: ["export", str(c.inputs.mask_run), "--merged", str(c.out), "--format", "sentence-transformers"],
         ("cannot hold a mask-pooled run", "Export it as ONNX")),
    Case("export of a prompt method's run", lambda c: ["export", str(c.inputs.warp_run), "--onnx", str(c.out)],
         ("warp adds prompt tokens to the input, which cannot be folded",)),
    Case("export without an output folder", lambda c: ["export", str(c.inputs.run)], ("needs --merged OUT_DIR",)),
    Case("export --format without --merged",
         lambda c: ["export", str(c.inputs.run), "--onnx", str(c.out), "--format", "transformers"],
         ("--format chooses the form of --merged",)),
    Case("export --merged and --onnx into one folder",
         lambda c: ["export", str(c.inputs.run), "--merged", str(c.out), "--onnx", str(c.out)],
         ("name the same folder",)),
    Case("eval on a file without labels", lambda c: ["eval", str(c.inputs.run), "--data", str(c.inputs.unlabelled)],
         ("has no label column 'label'",)),
    Case("train without --data", lambda c: ["train", "--output", str(c.out)], ("needs --data",)),
    Case("predict with nothing to predict", lambda c: ["predict", str(c.inputs.run)], ("Give texts",)),
    Case("predict from a folder without a finished run", lambda c: ["predict", str(c.work), "hi"],
         ("holds no finished run",)),
    Case("--budget together with --d", lambda c: _train(c, c.inputs.good, "--budget", "64", "--d", "64"),
         ("not allowed with argument --budget",)),
    Case("--epochs together with --max-steps", lambda c: _train(c, c.inputs.good, "--epochs", "1"),
         ("argument --epochs: not allowed with argument --max-steps",)),
    Case("unknown position", lambda c: _train(c, c.inputs.good, "--position", "middle"),
         ("invalid choice: 'middle'",)),
    Case("tag column that is not a list", lambda c: _train(c, c.inputs.flat_tags),
         ("Column 'tags' of flat_tags.jsonl holds text ('B-person O'), not a list of tags per token",),
         lambda c: load_tag_data(_spec(c, c.inputs.flat_tags), 0), DataError),
    Case("tokens and tags of different lengths", lambda c: _train(c, c.inputs.ragged_tags),
         ("Row 31 of ragged_tags.jsonl has 2 tokens but 1 tags",),
         lambda c: load_tag_data(_spec(c, c.inputs.ragged_tags), 0), DataError),
    Case("an empty sentence", lambda c: _train(c, c.inputs.empty_sentence),
         ("Row 31 of empty_sentence.jsonl is an empty sentence (no tokens)",),
         lambda c: load_tag_data(_spec(c, c.inputs.empty_sentence), 0), DataError),
    Case("a tag in the validation data unseen in training",
         lambda c: _train(c, c.inputs.tagged, "--validation", str(c.inputs.unknown_tag)),
         ("Tag(s) 'B-place' in unknown_tag.conll did not occur in the training data", "known tags: O, B-person"),
         lambda c: load_tag_data(_spec(c, c.inputs.tagged, validation=str(c.inputs.unknown_tag)), 0), DataError),
    Case("a CoNLL file with one column", lambda c: _train(c, c.inputs.one_column),
         ("one_column.conll has one column (the tokens) but no tags", "token<TAB>tag"),
         lambda c: load_tag_data(_spec(c, c.inputs.one_column), 0), DataError),
    Case("ε = 0", lambda c: _train(c, c.inputs.good, "--epsilon", "0"), ("ε must be a positive number",),
         lambda c: _trainer(c, privacy=Privacy(epsilon=0.0))),
    Case("ε < 0", lambda c: _train(c, c.inputs.good, "--epsilon", "-2"), ("ε must be a positive number",),
         lambda c: _trainer(c, privacy=Privacy(epsilon=-2.0))),
    Case("δ ≥ 1", lambda c: _train(c, c.inputs.good, "--epsilon", "1", "--delta", "1"),
         ("δ must be between 0 and 1",), lambda c: _trainer(c, privacy=Privacy(epsilon=1.0, delta=1.0))),
    Case("unreachable ε", lambda c: _train(c, c.inputs.good, "--epsilon", "0.0001"),
         ("ε = 0.0001 cannot be reached", "Within reach: ε ≥"),
         lambda c: _trainer(c, privacy=Privacy(epsilon=0.0001))),
]


@pytest.fixture
def ctx(inputs, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    return SimpleNamespace(inputs=inputs, work=work, out=work / "out", monkeypatch=monkeypatch)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_clear_line_and_leaves_nothing_behind(case, ctx, capfd):
    case.prepare(ctx)
    before = snapshot(ctx.work)
    inputs_before = snapshot(ctx.inputs.root)

    status, out, err = run_cli(case.argv(ctx), capfd)

    line = assert_one_line_user_error(status, err)
    for piece in case.expect:
        assert piece in line, line
    assert out == ""
    assert snapshot(ctx.work) == before  # no new run folder, merged folder or temporary file; old files unchanged
    assert snapshot(ctx.inputs.root) == inputs_before
    if hasattr(ctx, "marker"):
        assert not ctx.marker.exists(), "a vector file was unpickled"
    assert not ctx.inputs.weights_marker.exists(), "model weights were unpickled"

    if case.core is not None:
        with pytest.raises(case.error) as raised:
            case.core(ctx)
        assert str(raised.value) and "\n" not in str(raised.value)
        assert snapshot(ctx.work) == before
        if hasattr(ctx, "marker"):
            assert not ctx.marker.exists(), "a vector file was unpickled"
        assert not ctx.inputs.weights_marker.exists(), "model weights were unpickled"


@pytest.mark.parametrize("where", ["inside a read-only folder", "a read-only folder itself"])
def test_read_only_output_folder(where, ctx, capfd):
    parent = ctx.work / "locked"
    parent.mkdir()
    output = parent / "run" if where.startswith("inside") else parent
    with read_only(parent):
        status, _, err = run_cli(_train(ctx, ctx.inputs.good, output=output), capfd)
        line = assert_one_line_user_error(status, err)
        assert f"Cannot write to the output folder {output}: the folder is read-only" in line
        assert list(parent.iterdir()) == []
        with pytest.raises(ArtifactError, match="the folder is read-only"):
            _trainer(ctx, output=output)
        assert list(parent.iterdir()) == []


# --- inputs that look wrong but work ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "extra", "note"),
    [
        ("latin1", [], "latin1.tsv is not UTF-8; read it as"),
        ("semicolon", [], "semicolon.tsv is semicolon-separated, not tab-separated"),
        ("long", [], "were longer than 32 tokens and were truncated"),
        ("some_nan", [], "Dropped 30 row(s) of some_nan.tsv with an empty 'label'"),
        ("good", ["--max-train-rows", "40"], "read it in one streaming pass and kept a seeded random sample of 45 of "
                                             "its 150 rows"),
    ],
    ids=["latin1", "semicolon", "long", "some NaN labels", "too big for memory, with a row limit"],
)
def test_usable_inputs_work_with_a_note(name, extra, note, ctx, capfd):
    if "--max-train-rows" in extra:
        _low_memory(ctx)
    status, out, err = run_cli(_train(ctx, getattr(ctx.inputs, name), *extra), capfd)
    assert status == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert any(note in line for line in notes), err
    assert (ctx.out / "metrics.json").is_file()
    metrics = json.loads((ctx.out / "metrics.json").read_text(encoding="utf-8"))
    if name == "long":
        truncation = next(line for line in notes if "truncated" in line)
        found = re.search(r"(\d+) training and (\d+) validation texts were longer than 32 tokens", truncation)
        assert found, truncation
        trained, validated = int(found[1]), int(found[2])
        assert trained > 100 and validated > 5  # nearly every repeated sentence is over 32 tokens
    if name == "latin1":  # the accented words were decoded, not mangled
        loaded = load_task_data(_spec(ctx, ctx.inputs.latin1, validation_fraction=0.5), 0)
        every = loaded.train.texts + loaded.validation.texts
        assert "un café très crème, à la française" in every and "naïve, déjà vu, señor" in every
    if name == "some_nan":  # "NaN" is no class of its own
        vector = json.loads((ctx.out / "vector.json").read_text(encoding="utf-8"))
        assert vector["label_names"] == ["0", "1"] and metrics["train_examples"] + metrics["validation_examples"] == 120
    if "--max-train-rows" in extra:  # 45 sampled rows: 40 to train on, 5 held out
        assert (metrics["train_examples"], metrics["validation_examples"]) == (40, 5)


# --- the same contract in a real process --------------------------------------------------------------------


@pytest.mark.parametrize("which", ["unsupported architecture (T5)", "vector made for another base model",
                                   "model weights that are a pickle of Python objects"])
def test_user_errors_in_a_real_process(which, ctx):
    """The raw stderr of a real `jrft` process: one line, nothing else (no warnings, no progress bars)."""
    case = next(case for case in CASES if case.name == which)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JRFT_HOME": str(ctx.work.parent / "home")}
    before = snapshot(ctx.work)
    done = subprocess.run([sys.executable, "-m", "jrft_desktop.cli", *case.argv(ctx)], capture_output=True,
                          text=True, env=env, timeout=300)
    line = assert_one_line_user_error(done.returncode, done.stderr)
    assert all(piece in line for piece in case.expect), line
    assert done.stdout == ""
    assert snapshot(ctx.work) == before


def test_trust_remote_code_runs_only_when_asked_and_warns_in_one_line(ctx):
    """--trust-remote-code is the only way in (off by default), and says so once, in one line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JRFT_HOME": str(ctx.work.parent / "home")}
    argv = [sys.executable, "-m", "jrft_desktop.cli", *_train(ctx, ctx.inputs.good, "--trust-remote-code")]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    assert warnings == [f"warning: Running code shipped with {ctx.inputs.bert} (trust_remote_code is on)."]
    assert json.loads((ctx.out / "config.json").read_text(encoding="utf-8"))["model"]["trust_remote_code"] is True
    assert RunConfig().model.trust_remote_code is False
