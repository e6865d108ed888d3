"""Defaults that learn what the user asked (issue 30): a run given neither epochs nor steps trains until its
validation metric stops improving (patience in evaluations, the best checkpoint kept, a ceiling in epochs) and says
why it stopped; --epochs and --max-steps keep their meaning; a small file is trained, not refused; the default
decoding does not loop; the learning rate and the position come from the measurements per task, with their
source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jrft_desktop.core import runs
from jrft_desktop.core.build import build_model
from jrft_desktop.core.config import (DEFAULT_PATIENCE, MIN_CEILING_STEPS, DataSpec, Decoding, MethodSpec, ModelSpec,
                                      RunConfig, TrainingSpec)
from jrft_desktop.core.events import FinishedEvent, PreparedEvent, StepEvent
from jrft_desktop.core.export import vector as vector_file
from jrft_desktop.core.methods import get_method
from jrft_desktop.core.tasks import get_task
from jrft_desktop.core.tasks.generate import next_token, penalize_repeats
from jrft_desktop.core.train.batching import Schedule
from jrft_desktop.core.train.loop import Trainer
from tiny_models import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def config(tiny_models, train: Path, **training) -> RunConfig:
    return RunConfig(model=ModelSpec(str(tiny_models["bert"])), data=DataSpec(train=str(train), max_length=32),
                     method=MethodSpec(d=16), training=TrainingSpec(**{"device": "cpu", **training}))


def run(config: RunConfig, run_dir: Path) -> tuple[FinishedEvent, list]:
    events: list = []
    return Trainer(config, run_dir, [events.append]).run(), events


# --- stopping at convergence ----------------------------------------------------------------------------------
def test_the_default_run_plans_a_ceiling_and_stops_with_patience():
    """10 epochs of a large file; at least MIN_CEILING_STEPS steps of a small one; explicit lengths as given."""
    large = Schedule.plan(TrainingSpec(), 3_600, 1e-2, 400)
    assert (large.converges, large.total_steps, large.patience) == (True, 10 * 113, DEFAULT_PATIENCE)
    assert "at most 1,130 steps (10 epochs)" in large.describe_length()
    small = Schedule.plan(TrainingSpec(), 27, 1e-2, 3)
    assert (small.total_steps, small.steps_per_epoch) == (MIN_CEILING_STEPS, 1)  # a batch of 27: one step an epoch
    assert Schedule.plan(TrainingSpec(max_epochs=2), 3_600, 1e-2, 400).total_steps == 226
    for given in (TrainingSpec(epochs=3), TrainingSpec(max_steps=50)):
        fixed = Schedule.plan(given, 3_600, 1e-2, 400)
        assert not fixed.converges and fixed.patience is None  # no early stopping unless asked for
    assert Schedule.plan(TrainingSpec(epochs=3), 3_600, 1e-2, 400).total_steps == 339
    assert Schedule.plan(TrainingSpec(max_steps=50, early_stopping_patience=2), 3_600, 1e-2, 400).patience == 2
    private = Schedule.plan(TrainingSpec(), 3_600, 1e-2, 400, private=True)  # noise is calibrated to the plan
    assert (private.converges, private.total_steps, private.patience) == (False, 339, None)


def test_a_default_run_stops_when_it_converges_and_says_why(tiny_models, sst2_200, tmp_path):
    # a rate too small to move anything: the first evaluation stays the best, so patience ends the run
    finished, events = run(config(tiny_models, sst2_200, batch_size=8, eval_every=2, lr=1e-30), tmp_path / "run")
    prepared = next(event for event in events if isinstance(event, PreparedEvent))
    assert prepared.ceiling and prepared.total_steps == 10 * 23 and "until the validation metric" in prepared.length
    steps = [event for event in events if isinstance(event, StepEvent)]
    assert finished.status == "early-stopped" and len(steps) == 2 + 2 * DEFAULT_PATIENCE
    assert all(step.ceiling and step.total_steps == 230 for step in steps)
    # until an evaluation fails to improve (the one at step 4) only the ceiling's ETA; then also the sooner stop
    assert [step.eta_if_flat_s is None for step in steps[:4]] == [True] * 4
    assert all(step.eta_if_flat_s < step.eta_s for step in steps[4:])
    assert finished.reason.startswith(f"converged: accuracy did not improve in the last {DEFAULT_PATIENCE} "
                                      "evaluations") and "at step 2" in finished.reason
    metrics = json.loads((tmp_path / "run" / runs.METRICS_FILE).read_text(encoding="utf-8"))
    assert (metrics["best_step"], metrics["train_steps"], metrics["planned_steps"]) == (2, 8, 230)
    assert metrics["until_converged"] and metrics["stop_reason"] == finished.reason


def test_given_steps_train_them_all(tiny_models, sst2_200, tmp_path):
    finished, _ = run(config(tiny_models, sst2_200, max_steps=8, batch_size=8, eval_every=2, lr=1e-30),
                      tmp_path / "run")
    assert finished.status == "completed" and finished.metrics["train_steps"] == 8
    assert finished.reason.startswith("trained the 8 steps (0.348 epochs) asked for")


def test_a_run_saved_before_convergence_resumes_with_its_three_epochs(tiny_models, sst2_200, tmp_path,
                                                                      stop_at_step):
    stop, callback = stop_at_step(2)
    settings = config(tiny_models, sst2_200, batch_size=64, eval_every=2)
    assert Trainer(settings, tmp_path / "run", [callback], stop_event=stop).run().status == "stopped"
    saved = json.loads((tmp_path / "run" / runs.CONFIG_FILE).read_text(encoding="utf-8"))
    del saved["training"]["max_epochs"]  # as a run folder written before this version holds it
    (tmp_path / "run" / runs.CONFIG_FILE).write_text(json.dumps(saved), encoding="utf-8")
    finished = Trainer(None, tmp_path / "run", resume=True).run()
    assert finished.status == "completed" and finished.metrics["train_steps"] == 3 * 3  # 180 rows: 3 batches of 64


# --- a small file -------------------------------------------------------------------------------------------
def test_a_file_smaller_than_the_batch_trains_with_a_note(tiny_models, sst2_200, tmp_path):
    lines = sst2_200.read_text(encoding="utf-8").splitlines()
    small = tmp_path / "small.tsv"
    small.write_text("\n".join(lines[:31]) + "\n", encoding="utf-8")  # 30 rows: 27 train, 3 validate
    finished, events = run(config(tiny_models, small, max_steps=3), tmp_path / "run")
    prepared = next(event for event in events if isinstance(event, PreparedEvent))
    assert "batch size 32 lowered to 27: the training set has 27 examples" in prepared.notes
    assert finished.status == "completed" and finished.metrics["examples_per_s"] is not None


# --- decoding -----------------------------------------------------------------------------------------------
def test_the_repetition_penalty_makes_repeated_tokens_less_likely():
    logits = torch.tensor([2.0, 1.9, -1.0, 0.5])
    penalized = penalize_repeats(logits, [0, 2, 0], 1.25)
    assert penalized.tolist() == pytest.approx([1.6, 1.9, -1.25, 0.5])  # positive divided, negative multiplied
    generator = torch.Generator()
    assert next_token(logits, Decoding(), generator, [0]) == 1  # the default penalty turns a repeat away ...
    assert next_token(logits, Decoding(repetition_penalty=1.0), generator, [0]) == 0  # ... greedy keeps it
    assert Decoding(repetition_penalty=1.0).greedy and not Decoding().greedy
    long_ago = [0] + [3] * 64  # only the answer's last 64 tokens count
    assert next_token(logits, Decoding(), generator, long_ago) == 0


# --- measured defaults per task -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return build_tiny_model("llama", tmp_path_factory.mktemp("defaults") / "llama")


def plan_of(model: Path, task: str, **method):
    built = build_model(ModelSpec(str(model)), MethodSpec(**method), get_task(task), 2, structure_only=True)
    return built.plan


def test_the_learning_rate_and_position_come_from_the_task_family_or_method(tiny_models, llama):
    slash = get_method("slash")
    generate = plan_of(llama, "generate")
    assert (generate.default_lr, generate.position) == (slash.task_defaults["generate"]["lr"].value,
                                                         slash.task_defaults["generate"]["position"].value)
    assert "identity" in generate.default_lr_source and "identity" in generate.position_source
    tag = plan_of(tiny_models["bert"], "tag")
    assert tag.default_lr == slash.task_defaults["tag"]["lr"].value and "WNUT" in tag.default_lr_source
    classify = plan_of(tiny_models["bert"], "classify")
    assert (classify.default_lr, classify.position) == (slash.default_lr, slash.default_position.value)
    on_a_decoder = plan_of(llama, "classify")  # the family's measurement, where the task has none
    assert on_a_decoder.default_lr == 1e-2 and "SmolLM2" in on_a_decoder.default_lr_source
    chosen = plan_of(llama, "generate", position="attention")
    assert (chosen.position, chosen.position_source) == ("attention", "")
    assert plan_of(tiny_models["bert"], "classify", name="lora").position is None


def test_a_vector_records_the_position_auto_chose(tiny_models, sst2_200, tmp_path):
    finished, _ = run(config(tiny_models, sst2_200, max_steps=2), tmp_path / "run")
    _, metadata = vector_file.read_vector(tmp_path / "run" / "vector.safetensors")
    assert metadata["method_spec"]["position"] == get_method("slash").default_position.value
    assert vector_file.restore(tmp_path / "run" / "vector.safetensors").model is not None


def test_auto_picks_checkpoints_by_matthews_where_one_class_dominates(sst2_200, tmp_path):
    """On SST-2's own balance (about half positive) 'auto' is accuracy; on the same sentences with most negatives
    dropped (over two thirds positive, as CoLA is 70 % acceptable) it is Matthews correlation, which a run that always
    answers the majority class cannot raise."""
    task = get_task("classify")
    header, *rows = sst2_200.read_text(encoding="utf-8").splitlines()
    label = header.split("\t").index("label")
    negatives = [row for row in rows if row.split("\t")[label] == "0"]
    skewed = tmp_path / "skewed.tsv"
    skewed.write_text("\n".join([header, *(row for row in rows if row.split("\t")[label] == "1"),
                                 *negatives[:len(negatives) // 4]]) + "\n", encoding="utf-8")
    balanced, dominated = (task.load_data(DataSpec(train=str(path)), 0) for path in (sst2_200, skewed))
    shares = [max(np.bincount(data.train.labels)) / len(data.train.labels) for data in (balanced, dominated)]
    assert shares[0] < 2 / 3 < shares[1]
    assert (task.default_metric(balanced), task.default_metric(dominated)) == ("accuracy", "matthews")
