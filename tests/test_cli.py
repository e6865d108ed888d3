"""The `jrft` command-line contract, run as real processes on a tiny BERT and small slices of real data.

train -> run folder (vector, config, metrics, checkpoint), progress with an ETA on stderr and JSON on stdout;
eval / predict / export / apply / methods / --version over that run; Ctrl-C as a checkpointed stop that
`--resume` continues; and user errors as exit status 2 with one line on stderr (a traceback only with --debug)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from jrft_desktop import __version__
from jrft_desktop.core.paths import sample_data_dir

ALL_METHODS = ("slash", "jr-warp", "head", "bitfit", "lora", "vera", "warp", "full")
AGNEWS_CLASSES = ("Business", "Sci/Tech", "Sports", "World")
TEXTS = ["a gorgeous , witty and moving film", "a tedious mess that never finds its footing"]
FAST = ["--max-length", "32"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("jrft-home")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "JRFT_HOME": str(home),
            "TOKENIZERS_PARALLELISM": "false"}


def jrft(env, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jrft_desktop.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr
    return done


def one_line_error(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


def _slice(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("cli-data")
    sst = pd.read_csv(sample_data_dir() / "sst2_train.tsv", sep="\t", dtype=str, keep_default_na=False)
    agnews = pd.read_csv(shared_data / "agnews" / "train.tsv", sep="\t", dtype=str, keep_default_na=False)
    cola = pd.read_csv(shared_data / "cola" / "train.tsv", sep="\t", dtype=str, keep_default_na=False)
    cola_dev = pd.read_csv(shared_data / "cola" / "validation.tsv", sep="\t", dtype=str, keep_default_na=False)
    return {
        "sst_train": _slice(sst.iloc[:160], root / "sst2_train.tsv"),
        "sst_val": _slice(sst.iloc[2000:2040], root / "sst2_val.tsv"),
        "agnews": _slice(agnews.groupby("label").head(40).sample(frac=1.0, random_state=0), root / "agnews.tsv"),
        "cola": _slice(cola.iloc[:150], root / "cola_train.tsv"),
        "cola_val": _slice(cola_dev.iloc[:40], root / "cola_val.tsv"),
    }


@pytest.fixture(scope="module")
def sst_run(tmp_path_factory, tiny_models, data, env):
    """A SLaSh run with most train flags given explicitly (cls pooling, so it can be exported)."""
    run = tmp_path_factory.mktemp("cli-runs") / "sst-slash"
    done = ok(jrft(env, "train", "--data", data["sst_train"], "--validation", data["sst_val"],
                   "--text-column", "sentence", "--label-column", "label", "--model", tiny_models["bert"],
                   "--method", "slash", "--d", 64, "--position", "intermediate", "--pooling", "cls",
                   "--max-steps", 4, "--batch-size", 16, "--lr", 0.05, "--seed", 3, "--checkpoint-every", 2,
                   *FAST, "--output", run))
    return run, done


# --- train --------------------------------------------------------------------------------------------------


def test_train_writes_a_complete_run_folder(sst_run, data):
    run, done = sst_run
    for name in ("vector.safetensors", "vector.json", "config.json", "metrics.json", "checkpoint/state.safetensors",
                 "checkpoint/trainer.json"):
        assert (run / name).is_file(), name
    assert not (run / "run.lock").exists()
    mode = (run / "config.json").stat().st_mode & 0o777  # the vector is as readable as any other file
    assert (run / "vector.safetensors").stat().st_mode & 0o777 == mode == (run / "vector.json").stat().st_mode & 0o777

    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["method"] == "slash" and metrics["d"] == 64 and metrics["position"] == "intermediate"
    assert metrics["train_steps"] == 4 and metrics["status"] == "completed"
    assert metrics["trainable_params"] == 64 + 2 * 32 + 2  # z plus a 2-class head on hidden size 32
    assert metrics["step_time_s"] > 0 and 0 <= metrics["accuracy"] <= 1
    assert metrics["validation_examples"] == 40 and metrics["train_examples"] == 160

    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["method"] == {**config["method"], "name": "slash", "d": 64, "position": "intermediate"}
    assert config["training"]["lr"] == 0.05 and config["training"]["seed"] == 3
    assert config["training"]["batch_size"] == 16 and config["training"]["checkpoint_every"] == 2
    assert config["data"]["max_length"] == 32 and config["data"]["text_column"] == "sentence"

    report = json.loads(done.stdout)  # stdout is JSON, and only JSON
    assert report["status"] == "completed" and report["metrics"]["accuracy"] == metrics["accuracy"]
    assert {Path(f).name for f in report["files"]} >= {"vector.safetensors", "vector.json", "metrics.json"}
    progress = done.stderr.splitlines()
    assert any("ETA" in line and line.startswith("step ") for line in progress)
    assert progress[0].startswith("slash, d = 64: 130 trainable parameters")


def test_agnews_four_string_classes_with_a_budget(tmp_path, tiny_models, data, env):
    run = tmp_path / "agnews"
    done = ok(jrft(env, "train", "--data", data["agnews"], "--model", tiny_models["bert"], "--budget", 128,
                   "--max-steps", 3, "--batch-size", 16, *FAST, "--output", run))
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["d"] == 128 and metrics["trainable_params"] == 128 + 4 * 32 + 4
    assert "validation_source" in metrics and "stratified" in metrics["validation_source"]
    assert json.loads(done.stdout)["metrics"]["train_steps"] == 3
    vector = json.loads((run / "vector.json").read_text(encoding="utf-8"))
    assert tuple(vector["label_names"]) == AGNEWS_CLASSES

    lines = ok(jrft(env, "predict", run, "Stocks fell sharply on Wall Street today.")).stdout.splitlines()
    record = json.loads(lines[0])
    assert len(lines) == 1 and record["label"] in AGNEWS_CLASSES
    assert set(record["probabilities"]) == set(AGNEWS_CLASSES)
    assert math.isclose(sum(record["probabilities"].values()), 1.0, abs_tol=1e-5)


@pytest.mark.parametrize(("first", "second"), [(["--budget", "64"], ["--d", "64"]),
                                               (["--epochs", "1"], ["--max-steps", "3"])])
def test_exclusive_flags(first, second, tmp_path, data, env):
    done = jrft(env, "train", "--data", data["sst_train"], *first, *second, "--output", tmp_path / "run")
    line = one_line_error(done)
    assert re.search(f"argument {second[0]}(/[-a-z]+)?: not allowed with argument {first[0]}", line), line
    assert not (tmp_path / "run").exists()


def test_ctrl_c_stops_with_a_checkpoint_and_resume_finishes(tmp_path, tiny_models, data, env):
    """CoLA with LoRA for one epoch (--epochs), stopped by Ctrl-C after its first checkpoint, then resumed."""
    run = tmp_path / "cola-lora"
    total = math.ceil(150 / 4)
    process = subprocess.Popen(
        [sys.executable, "-m", "jrft_desktop.cli", "train", "--data", str(data["cola"]), "--validation",
         str(data["cola_val"]), "--model", str(tiny_models["bert"]), "--method", "lora", "--epochs", "1",
         "--batch-size", "4", "--metric", "matthews", "--eval-every", "1000", "--checkpoint-every", "1", *FAST,
         "--output", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoint" / "trainer.json").is_file():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert json.loads(out)["status"] == "stopped", "the run finished before Ctrl-C arrived"
    assert "stopping after this step" in err and f"jrft train --resume --output {run}" in err
    assert not (run / "metrics.json").exists() and not (run / "run.lock").exists()
    assert not (run / "vector.safetensors").exists()
    stopped_at = json.loads((run / "checkpoint" / "trainer.json").read_text(encoding="utf-8"))["step"]
    assert 1 <= stopped_at < total

    done = ok(jrft(env, "train", "--resume", "--output", run))
    assert f"note: resumed from step {stopped_at}" in done.stderr
    assert f"step {total}/{total}" in done.stderr
    assert "warning" not in done.stderr  # no library deprecation notices (peft's about gradient checkpointing)
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["status"] == "completed" and metrics["train_steps"] == total
    assert metrics["method"] == "lora" and metrics["metric"] == "matthews" and -1 <= metrics["matthews"] <= 1
    assert metrics["validation_examples"] == 40 and metrics["train_examples"] == 150
    assert json.loads(done.stdout)["metrics"]["train_steps"] == total


# --- using a run --------------------------------------------------------------------------------------------


def test_eval_reproduces_the_run_accuracy(sst_run, data, env):
    run, _ = sst_run
    scores = json.loads(ok(jrft(env, "eval", run, "--data", data["sst_val"])).stdout)
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert scores["examples"] == 40
    assert scores["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
    assert scores["loss"] == pytest.approx(metrics["loss"], rel=1e-4)


def _predictions(done) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def sst_predictions(sst_run, env) -> list[dict]:
    return _predictions(ok(jrft(env, "predict", sst_run[0], *TEXTS)))


def test_predict_texts(sst_predictions):
    records = sst_predictions
    assert [record["text"] for record in records] == TEXTS
    for record in records:
        assert record["label"] in ("0", "1") and set(record["probabilities"]) == {"0", "1"}
        assert math.isclose(sum(record["probabilities"].values()), 1.0, abs_tol=1e-5)
        assert record["label"] == max(record["probabilities"], key=record["probabilities"].get)


def test_predict_a_file_in_file_order(sst_run, data, env):
    run, _ = sst_run
    records = _predictions(ok(jrft(env, "predict", run, "--data", data["sst_val"])))
    expected = pd.read_csv(data["sst_val"], sep="\t", dtype=str, keep_default_na=False)["sentence"].tolist()
    assert [record["text"] for record in records] == expected
    assert all(math.isclose(sum(r["probabilities"].values()), 1.0, abs_tol=1e-5) for r in records)


STOCK_PREDICT = """
import json, sys
sys.modules["jrft_desktop"] = None  # the merged folder must need nothing from this app
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folder, texts = sys.argv[1], sys.argv[2:]
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
with torch.no_grad():
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    probabilities = model(**batch).logits.softmax(-1)
print(json.dumps({"class": type(model).__name__, "rows": [
    {model.config.id2label[i]: float(p) for i, p in enumerate(row)} for row in probabilities]}))
"""


def test_export_merged_loads_in_stock_transformers_and_agrees(sst_run, sst_predictions, tmp_path, env):
    run, _ = sst_run
    merged = tmp_path / "merged"
    report = json.loads(ok(jrft(env, "export", run, "--merged", merged)).stdout)
    assert Path(report["merged_model"]) == merged and (merged / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temporary folders left beside it

    stock = json.loads(ok(subprocess.run([sys.executable, "-c", STOCK_PREDICT, str(merged), *TEXTS],
                                         capture_output=True, text=True, env=env, timeout=300)).stdout)
    assert stock["class"] == "BertForSequenceClassification"
    assert len(stock["rows"]) == len(sst_predictions) == len(TEXTS)
    for theirs, mine in zip(stock["rows"], sst_predictions):
        assert set(theirs) == set(mine["probabilities"])
        for label, probability in mine["probabilities"].items():
            assert theirs[label] == pytest.approx(probability, abs=1e-4)


ONNX_PREDICT = """
import json, sys
sys.modules["torch"] = sys.modules["jrft_desktop"] = None  # onnxruntime and tokenizers alone
import numpy as np, onnxruntime
from tokenizers import Tokenizer
folder, texts = sys.argv[1], sys.argv[2:]
session = onnxruntime.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
encodings = Tokenizer.from_file(f"{folder}/tokenizer.json").encode_batch(texts)
feeds = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
         "token_type_ids": [e.type_ids for e in encodings]}
logits, = session.run(["logits"], {n.name: np.array(feeds[n.name], dtype=np.int64) for n in session.get_inputs()})
probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
names = json.load(open(f"{folder}/config.json"))["id2label"]
print(json.dumps([{names[str(i)]: float(p) for i, p in enumerate(row)} for row in probabilities]))
"""


def test_export_of_a_mean_pooled_run_picks_sentence_transformers_and_onnx_agrees(tmp_path, tiny_models, data, env):
    run = tmp_path / "mean-run"
    ok(jrft(env, "train", "--data", data["sst_train"], "--validation", data["sst_val"], "--model", tiny_models["bert"],
            "--pooling", "mean", "--d", 32, "--max-steps", 3, "--batch-size", 16, *FAST, "--output", run))
    merged, onnx = tmp_path / "merged", tmp_path / "onnx"
    report = json.loads(ok(jrft(env, "export", run, "--merged", merged, "--onnx", onnx)).stdout)
    assert report["format"] == "sentence-transformers" and "SentenceTransformer(folder)" in report["loads_with"]
    assert report["merged_model"] == str(merged) and report["onnx"] == str(onnx)
    assert "cannot compute" in report["passed_over"]["transformers"]
    assert (merged / "modules.json").is_file() and (merged / "2_Dense" / "config.json").is_file()
    assert {"model.onnx", "tokenizer.json", "config.json"} <= {p.name for p in onnx.iterdir()}

    line = one_line_error(jrft(env, "export", run, "--merged", tmp_path / "refused", "--format", "transformers"))
    assert "mean pooling" in line and "sentence-transformers folder or as ONNX" in line
    assert not (tmp_path / "refused").exists()

    mine = _predictions(ok(jrft(env, "predict", run, *TEXTS)))
    stock = json.loads(ok(subprocess.run([sys.executable, "-c", ONNX_PREDICT, str(onnx), *TEXTS],
                                         capture_output=True, text=True, env=env, timeout=300)).stdout)
    for theirs, record in zip(stock, mine, strict=True):
        assert theirs == pytest.approx(record["probabilities"], abs=1e-4)


def test_apply_on_its_base_model_and_refused_on_another(sst_run, tmp_path, tiny_models, env):
    from tiny_models import build_tiny_model

    run, _ = sst_run
    vector = run / "vector.safetensors"
    out = tmp_path / "applied"
    ok(jrft(env, "apply", vector, "--model", tiny_models["bert"], "--output", out))
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "0", "1": "1"}

    other = build_tiny_model("bert", tmp_path / "other-bert", seed=1)
    refused = tmp_path / "refused"
    line = one_line_error(jrft(env, "apply", vector, "--model", other, "--output", refused))
    assert "another base model" in line
    assert not refused.exists()


def test_methods_says_mergeable_only_where_the_stock_class_holds_the_fold(env, tmp_path):
    """phi3 has no bias anywhere: SLaSh cannot be a stock Phi-3, LoRA can; qwen3 folds at its default position."""
    from tiny_models import build_family_model

    for family, slash in (("phi3", "no"), ("qwen3", "yes")):
        lines = ok(jrft(env, "methods", "--model", str(build_family_model(family, tmp_path / family)))).stdout
        rows = {line.split()[0]: line.split() for line in lines.splitlines()[2:] if not line.startswith("note: ")}
        assert (rows["slash"][4], rows["lora"][4]) == (slash, "yes"), (family, lines)


def test_methods_lists_every_method_with_counts(tiny_models, env):
    notes: list[str] = []

    def table(*extra) -> dict[str, list[str]]:
        lines = ok(jrft(env, "methods", "--model", tiny_models["bert"], *extra)).stdout.splitlines()
        assert lines[0].startswith(f"{tiny_models['bert']}: bert, 2 layers, hidden 32")
        assert lines[1].split()[:4] == ["method", "size", "params", "with"]
        notes[:] = [line for line in lines[2:] if line.startswith("note: ")]
        return {line.split()[0]: line.split() for line in lines[2:] if not line.startswith("note: ")}

    rows = table()
    assert tuple(rows) == ALL_METHODS
    for name, (_, size, params, with_head, *_) in rows.items():
        params, with_head = int(params.replace(",", "")), int(with_head.replace(",", ""))
        assert with_head == params + 2 * 32 + 2, name
    assert rows["slash"][1] == "d=1024" and rows["slash"][2] == "1,024"
    assert rows["head"][2] == "0"
    assert rows["vera"][1:3] == ["rank=256", f"{4 * (32 + 256):,}"]  # q and v in 2 layers: b (32) + d (rank)
    budgeted = table("--budget", 500)
    assert tuple(budgeted) == ALL_METHODS
    assert budgeted["slash"][1:3] == ["d=500", "500"] and budgeted["jr-warp"][1] == "d=500"
    assert budgeted["vera"][1:3] == ["rank=93", "500"]  # (500 - 4 x 32) / 4
    assert budgeted["lora"][1:3] == ["rank=2", "512"]  # q and v in 2 layers: 256 a rank
    assert sorted(note.split()[1] for note in notes) == ["bitfit", "full", "head"]  # no size to fit the budget
    assert table("--budget", 200)["lora"][1:3] == ["rank=1", "128"]  # below rank 1 on q and v: the query alone
    assert any(note.startswith("note: lora adapts only the query projections") for note in notes)


def test_version(env):
    done = ok(jrft(env, "--version"))
    assert done.stdout.strip() == f"jrft {__version__}"


# --- user errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "expect"), [
    (["train", "--data", "{sst}", "--method", "sslash", "--model", "{bert}", "--max-steps", "2", "--output",
      "{tmp}/run"], "Did you mean 'slash'"),
    (["predict"], "the following arguments are required: RUN_DIR"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_user_errors_are_one_line_and_debug_shows_the_traceback(args, expect, tmp_path, tiny_models, data, env):
    args = [arg.format(tmp=tmp_path, sst=data["sst_train"], bert=tiny_models["bert"]) for arg in args]
    line = one_line_error(jrft(env, *args))
    assert expect in line
    assert not (tmp_path / "run").exists()
    if args[0] == "train" and "--method" in args:  # a UserError raised deep in the core
        debug = jrft(env, "--debug", *args)
        assert debug.returncode == 2 and "Traceback" in debug.stderr
        assert debug.stderr.strip().splitlines()[-1] == line
        assert not (tmp_path / "run").exists()
