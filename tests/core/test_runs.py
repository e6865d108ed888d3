"""Where a run stands, read from its folder alone (core.runs): completed, early-stopped, stopped (resumable) and
incomplete runs, their steps and metric, the history, the listing of a runs folder, and folders that hold no run.
The runs are real ones, trained on the tiny BERT; the damaged and unfinished cases are made from them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from jrft_desktop.core import runs
from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, RunConfig, TrainingSpec
from jrft_desktop.core.events import StepEvent
from jrft_desktop.core.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 8


def train(tiny_models, data, run_dir, stop_after: int | None = None, method: str = "slash", **training):
    config = RunConfig(model=ModelSpec(str(tiny_models["bert"])), data=DataSpec(train=str(data), max_length=32),
                       method=MethodSpec(name=method, d=32),
                       training=TrainingSpec(**{"max_steps": STEPS, "batch_size": 8, "eval_every": 4, "lr": 0.05,
                                                "device": "cpu", **training}))
    stop = threading.Event()

    def stop_early(event):
        if isinstance(event, StepEvent) and event.step == stop_after:
            stop.set()

    return Trainer(config, run_dir, [stop_early], stop_event=stop).run()


@pytest.fixture(scope="module")
def folders(tiny_models, sst2_200, tmp_path_factory):
    """A completed run, one stopped before its first evaluation and one stopped after it."""
    root = tmp_path_factory.mktemp("runs")
    finished = {name: train(tiny_models, sst2_200, root / name, stop_after=stop)
                for name, stop in (("completed", None), ("stopped-early", 3), ("stopped-late", 6))}
    assert [event.status for event in finished.values()] == ["completed", "stopped", "stopped"]
    return root


@pytest.fixture
def copy_of(folders, tmp_path):
    def copy(name: str):
        target = tmp_path / f"{name}-copy"
        shutil.copytree(folders / name, target)
        return target

    return copy


def test_a_completed_run(folders, sst2_200):
    run = runs.summarize_run(folders / "completed")
    saved = json.loads((folders / "completed" / runs.METRICS_FILE).read_text(encoding="utf-8"))
    assert run.status == runs.COMPLETED and not run.resumable and run.has_vector
    assert run.name == "completed" and run.path == folders / "completed"
    assert run.method == "slash" and run.data == sst2_200.name
    assert run.steps == str(STEPS) and saved["train_steps"] == STEPS
    assert run.metric_name == "accuracy" and run.metric == saved["accuracy"] and 0 <= run.metric <= 1
    assert run.trainable_params == saved["trainable_params"] == 32 + 66  # z, and the head of 2 labels on 32
    assert run.metrics == saved
    assert run.created == (folders / "completed" / runs.CONFIG_FILE).stat().st_mtime


def test_a_run_stopped_before_its_first_evaluation(folders):
    run = runs.summarize_run(folders / "stopped-early")
    assert run.status == runs.STOPPED and run.resumable and not run.has_vector
    assert run.steps == f"3 of {STEPS}"
    assert run.metric_name is None and run.metric is None and run.metrics == {}
    assert run.trainable_params is None and run.method == "slash"


def test_a_run_stopped_after_an_evaluation_shows_the_last_one(folders):
    run = runs.summarize_run(folders / "stopped-late")
    state = runs.checkpoint_state(folders / "stopped-late")
    last_eval = [entry["eval"] for entry in state["history"] if "eval" in entry][-1]
    assert run.status == runs.STOPPED and run.steps == f"{state['step']} of {STEPS}" and state["step"] == 6
    assert run.metric_name == "accuracy" and run.metric == last_eval["accuracy"] and run.metrics == last_eval


def test_the_configured_metric_names_a_stopped_runs_metric(copy_of):
    folder = copy_of("stopped-late")
    config = json.loads((folder / runs.CONFIG_FILE).read_text(encoding="utf-8"))
    config["training"]["metric"] = "matthews"
    (folder / runs.CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
    run = runs.summarize_run(folder)
    assert run.metric_name == "matthews" and run.metric == run.metrics["matthews"]


def test_early_stopped_is_read_from_the_metrics(copy_of):
    folder = copy_of("completed")
    saved = json.loads((folder / runs.METRICS_FILE).read_text(encoding="utf-8"))
    (folder / runs.METRICS_FILE).write_text(json.dumps({**saved, "status": "early-stopped", "train_steps": 4}),
                                            encoding="utf-8")
    run = runs.summarize_run(folder)
    assert run.status == runs.EARLY_STOPPED and not run.resumable and run.steps == "4"


def test_a_run_without_checkpoint_or_metrics_is_incomplete(copy_of):
    folder = copy_of("stopped-early")  # a run that failed before its first checkpoint leaves its config alone
    shutil.rmtree(folder / runs.CHECKPOINT_DIR)
    run = runs.summarize_run(folder)
    assert run.status == runs.INCOMPLETE and not run.resumable and run.steps == "0" and run.metric is None
    assert runs.load_history(folder) == []


def test_a_damaged_checkpoint_state_reads_as_incomplete(copy_of):
    folder = copy_of("stopped-early")
    (folder / runs.CHECKPOINT_DIR / runs.CHECKPOINT_STATE).write_text("{half", encoding="utf-8")
    assert runs.checkpoint_state(folder) is None
    assert runs.summarize_run(folder).status == runs.INCOMPLETE


@pytest.mark.parametrize("config", [None, "not json", "[1, 2]", '{"training": {"no_such_setting": 1}}'])
def test_folders_without_a_readable_run_are_not_runs(config, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    if config is not None:
        (folder / runs.CONFIG_FILE).write_text(config, encoding="utf-8")
    assert runs.summarize_run(folder) is None


def test_history_of_a_finished_and_of_a_stopped_run(folders):
    history = runs.load_history(folders / "completed")
    assert history == json.loads((folders / "completed" / runs.HISTORY_FILE).read_text(encoding="utf-8"))
    assert [entry["step"] for entry in history if "loss" in entry] == list(range(1, STEPS + 1))
    assert [entry["step"] for entry in history if "eval" in entry] == [4, 8]
    stopped = runs.load_history(folders / "stopped-late")  # no history.json yet: the checkpoint's
    assert not (folders / "stopped-late" / runs.HISTORY_FILE).exists()
    assert stopped == runs.checkpoint_state(folders / "stopped-late")["history"]
    assert [entry["step"] for entry in stopped if "eval" in entry] == [4]


def test_list_runs_newest_first_without_hidden_or_other_folders(folders, tmp_path):
    root = tmp_path / "root"
    for index, name in enumerate(("completed", "stopped-early", "stopped-late")):
        shutil.copytree(folders / name, root / name)
        os.utime(root / name / runs.CONFIG_FILE, (1_700_000_000 + index, 1_700_000_000 + index))
    shutil.copytree(folders / "completed", root / ".hidden")
    (root / "not-a-run").mkdir()
    (root / "a-file.txt").write_text("", encoding="utf-8")
    listed = runs.list_runs(root)
    assert [run.name for run in listed] == ["stopped-late", "stopped-early", "completed"]
    assert [run.status for run in listed] == [runs.STOPPED, runs.STOPPED, runs.COMPLETED]
    assert runs.list_runs(tmp_path / "missing") == []


def test_reading_runs_does_not_load_torch():
    """The app lists the runs folder before torch has loaded."""
    code = "import sys, jrft_desktop.core.runs; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
