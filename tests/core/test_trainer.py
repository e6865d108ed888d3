"""The training loop on the tiny BERT and a 200-row slice of the bundled SST-2 sample: events, run folders, stop /
resume, pause, gradient accumulation, early stopping, the best checkpoint, locks, regression, and the metrics."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from safetensors.torch import load_file

from jrft_desktop.core import metrics, runs
from jrft_desktop.core.export import vector as vector_file
from jrft_desktop.core.config import TrainingSpec, DataSpec, MethodSpec, ModelSpec, RunConfig
from jrft_desktop.core.tasks.classify import load_task_data
from jrft_desktop.core.errors import ArtifactError
from jrft_desktop.core.events import (CheckpointEvent, EvalEvent, FailedEvent, FinishedEvent, PreparedEvent,
                                      StepEvent)
from jrft_desktop.core.inference import pick_device, predict_logits
from jrft_desktop.core.train.batching import EVAL_SPACING, MIN_EVALUATIONS, Batches, Schedule, lr_factor
from jrft_desktop.core.train.loop import Trainer, beats_best

D = 32
LR = 0.05


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def train_file(sst2_200) -> Path:
    """The first 200 rows of the bundled SST-2 training sample (real sentences, labels 0/1)."""
    return sst2_200


def make_config(tiny_models, train_file, method: str = "slash", **budget) -> RunConfig:
    settings = dict(max_steps=12, batch_size=8, eval_every=4, lr=LR, warmup_ratio=0.1, device="cpu")
    settings.update(budget)
    return RunConfig(
        model=ModelSpec(str(tiny_models["bert"])),
        data=DataSpec(train=str(train_file), max_length=32),
        method=MethodSpec(name=method, d=D),
        training=TrainingSpec(**settings),
    )


def train(config, run_dir, **kwargs) -> tuple[FinishedEvent, list]:
    events: list = []
    callbacks = [events.append, *kwargs.pop("callbacks", [])]
    finished = Trainer(config, run_dir, callbacks=callbacks, **kwargs).run()
    return finished, events


def of_type(events, kind):
    return [event for event in events if isinstance(event, kind)]


def expected_lr(step: int, total: int, warmup: int, schedule: str) -> float:
    """The rate of optimizer step `step` (1-based), written out independently of trainer.lr_factor."""
    if step <= warmup:
        return LR * step / warmup
    if schedule == "constant":
        return LR
    return LR * (total - step + 1) / (total - warmup)


# --- one complete run, inspected by several tests -------------------------------------------------------------


@pytest.fixture(scope="module")
def completed(tiny_models, train_file, tmp_path_factory):
    config = make_config(tiny_models, train_file, max_steps=20, eval_every=5)
    run_dir = tmp_path_factory.mktemp("runs") / "complete"
    finished, events = train(config, run_dir)
    return config, run_dir, finished, events


def test_events_arrive_in_order(completed):
    config, run_dir, finished, events = completed
    assert isinstance(events[0], PreparedEvent) and events[-1] is finished
    assert not of_type(events, FailedEvent)
    prepared = events[0]
    assert (prepared.total_steps, prepared.start_step) == (20, 0)
    assert (prepared.train_examples, prepared.validation_examples) == (180, 20)  # a 10% stratified split
    assert prepared.plan["trainable_params"] == D + 32 * 2 + 2

    steps = of_type(events, StepEvent)
    assert [event.step for event in steps] == list(range(1, 21))
    assert all(event.total_steps == 20 and math.isfinite(event.loss) and event.step_time_s > 0 for event in steps)
    assert steps[-1].epoch == pytest.approx(20 / math.ceil(180 / 8))
    assert [event.step for event in of_type(events, EvalEvent)] == [5, 10, 15, 20]
    assert all(event.metric_name == "accuracy" for event in of_type(events, EvalEvent))
    # Checkpoints with the evaluations, but none after the last step (the run is complete there).
    assert [event.step for event in of_type(events, CheckpointEvent)] == [5, 10, 15]
    # Each evaluation directly follows its step.
    for index, event in enumerate(events):
        if isinstance(event, EvalEvent):
            assert isinstance(events[index - 1], StepEvent) and events[index - 1].step == event.step
    assert finished.status == "completed" and finished.run_dir == str(run_dir)


def test_linear_schedule(completed):
    _, _, _, events = completed
    rates = [event.lr for event in of_type(events, StepEvent)]
    warmup = round(0.1 * 20)
    assert rates == pytest.approx([expected_lr(step, 20, warmup, "linear") for step in range(1, 21)], abs=1e-12)
    # The warmup counts from 1/warmup (no wasted step at rate 0), so the peak is reached on its last step and
    # held for one more: the decay factor (total - index) / (total - warmup) is 1 on the first step after it.
    assert rates[warmup - 1] == rates[warmup] == pytest.approx(LR)
    assert all(a < b for a, b in zip(rates[:warmup], rates[1:warmup]))
    decay = np.diff(rates[warmup:])
    assert np.allclose(decay, -LR / (20 - warmup))  # a straight line ...
    assert rates[-1] + decay[-1] == pytest.approx(0.0, abs=1e-12)  # ... that reaches zero one step after the end


def test_constant_schedule(tiny_models, train_file, tmp_path):
    config = make_config(tiny_models, train_file, max_steps=8, eval_every=8, schedule="constant", warmup_ratio=0.25)
    _, events = train(config, tmp_path / "run")
    rates = [event.lr for event in of_type(events, StepEvent)]
    assert rates == pytest.approx([LR / 2, LR, LR, LR, LR, LR, LR, LR], abs=1e-12)
    assert lr_factor(0, 8, 0, "constant") == 1.0  # no warmup: full rate from the first step


def test_default_evaluation_spacing_keeps_evaluation_cheap():
    """Without --eval-every a run evaluates ten times, or less often when its validation set is big: at most once
    per EVAL_SPACING validation sets' worth of training examples, but at least MIN_EVALUATIONS times."""
    def evals(train: int, validation: int, **training) -> int:
        schedule = Schedule.plan(TrainingSpec(**{"epochs": 3, **training}), train, 1e-2, validation)
        total = schedule.total_steps  # the last step is always evaluated
        return len({*range(schedule.eval_every, total + 1, schedule.eval_every), total})

    assert evals(3_200, 50) == 10  # small validation set: 300 steps, every 30
    # SST-2's training file with the default 10 % held out: 60,614 rows trained 3 epochs, 6,735 validated.
    sst2 = Schedule.plan(TrainingSpec(epochs=3), 60_614, 1e-2, 6_735)
    assert sst2.eval_every == math.ceil(EVAL_SPACING * 6_735 / 32) == 1_263
    assert evals(60_614, 6_735) == 5  # at 1,263, 2,526, 3,789, 5,052 and the last step, 5,685
    assert 5 * 6_735 / (sst2.total_steps * 32) < 1 / 5  # scoring a row costs about half of training on one
    assert evals(12_000, 6_062) == MIN_EVALUATIONS  # a validation set half the size of the training rows
    assert evals(1_125 * 32, 10) == 10  # no evaluation a step before the last one: every 113 steps, then 1,125
    # accumulation counts: 4 batches of 8 per step train as many examples as a batch of 32
    assert (Schedule.plan(TrainingSpec(epochs=3, batch_size=8, gradient_accumulation=4), 60_614, 1e-2, 6_735).eval_every
            == 1_263)
    # a validation set bigger than the whole run still gets a curve: MIN_EVALUATIONS evaluations
    assert evals(100, 10_000, max_steps=20) == MIN_EVALUATIONS == 4
    assert evals(100, 10_000, max_steps=3) == 3  # a run shorter than that evaluates at every step
    assert Schedule.plan(TrainingSpec(eval_every=7), 60_614, 1e-2, 6_735).eval_every == 7  # the user's choice


def test_events_are_frozen_dataclasses(completed):
    events = completed[3]
    assert {type(event) for event in events} == {PreparedEvent, StepEvent, EvalEvent, CheckpointEvent,
                                                 FinishedEvent}
    for event in events:
        assert dataclasses.is_dataclass(event)
        field = dataclasses.fields(event)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, field, None)


def test_run_folder_contents(completed):
    config, run_dir, finished, events = completed
    for name in ("config.json", "vector.safetensors", "vector.json", "metrics.json", "history.json",
                 "best.safetensors"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / runs.LOCK_FILE).exists()  # released at the end
    assert RunConfig.from_json((run_dir / "config.json").read_text(encoding="utf-8")) == config

    summary = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert summary["method"] == "slash"
    assert summary["trainable_params"] == D + 66 and summary["d"] == D
    assert summary["train_steps"] == 20 and summary["status"] == "completed"
    assert summary["step_time_s"] > 0
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert summary["accuracy"] == finished.metrics["accuracy"]
    assert set(finished.files) >= {str(run_dir / "vector.safetensors"), str(run_dir / "metrics.json")}

    history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert losses == [event.loss for event in of_type(events, StepEvent)]
    assert [entry["step"] for entry in history if "eval" in entry] == [5, 10, 15, 20]

    tensors, metadata = vector_file.read_vector(run_dir / "vector.safetensors")  # verified (SHA-256, sidecar)
    assert set(tensors) == {"projected.z", "head.weight", "head.bias"}
    assert metadata["method"] == "slash" and metadata["label_names"] == ["0", "1"]
    assert metadata["projection"]["d"] == D


# --- stop and resume ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eval_every", [16, 5], ids=["eval-at-end", "eval-every-5"])
def test_stop_then_resume_equals_uninterrupted(tiny_models, train_file, tmp_path, eval_every):
    """With eval_every=16 the only evaluation is at the end, so the exported vector is the final state."""
    config = make_config(tiny_models, train_file, max_steps=16, eval_every=eval_every)
    _, straight_events = train(config, tmp_path / "straight")

    stop = threading.Event()

    def stop_at_7(event):
        if isinstance(event, StepEvent) and event.step == 7:
            stop.set()

    stopped, events = train(config, tmp_path / "stopped", stop_event=stop, callbacks=[stop_at_7])
    run_dir = tmp_path / "stopped"
    assert stopped.status == "stopped"
    assert [event.step for event in of_type(events, StepEvent)] == list(range(1, 8))
    assert of_type(events, CheckpointEvent)[-1].step == 7
    assert (run_dir / "checkpoint" / "state.safetensors").is_file()
    assert json.loads((run_dir / "checkpoint" / "trainer.json").read_text())["step"] == 7
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "vector.safetensors").exists()
    assert not (run_dir / runs.LOCK_FILE).exists()

    resumed, resumed_events = train(None, run_dir, resume=True)
    assert resumed.status == "completed"
    assert resumed_events[0].start_step == 7
    assert [event.step for event in of_type(resumed_events, StepEvent)] == list(range(8, 17))

    for name in ("vector.safetensors", "best.safetensors"):
        straight, again = load_file(str(tmp_path / "straight" / name)), load_file(str(run_dir / name))
        assert set(straight) == set(again) == {"projected.z", "head.weight", "head.bias"}
        for key in straight:
            assert torch.equal(straight[key], again[key]), f"{name}:{key} differs after resuming"
    assert not torch.equal(load_file(str(run_dir / "vector.safetensors"))["projected.z"], torch.zeros(D))
    straight_losses = [event.loss for event in of_type(straight_events, StepEvent)]
    assert straight_losses == [event.loss for event in of_type(events + resumed_events, StepEvent)]
    straight_summary = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    resumed_summary = json.loads((run_dir / "metrics.json").read_text())
    assert (resumed_summary["accuracy"], resumed_summary["best_step"]) == \
        (straight_summary["accuracy"], straight_summary["best_step"])


def test_resume_refuses_a_finished_run(completed):
    with pytest.raises(ArtifactError, match="already finished"):
        Trainer(None, completed[1], resume=True).run()


def test_stop_while_paused(tiny_models, train_file, tmp_path):
    stop, pause = threading.Event(), threading.Event()

    def pause_then_stop(event):
        if isinstance(event, StepEvent) and event.step == 2:
            pause.set()
            threading.Timer(0.3, stop.set).start()

    finished, events = train(make_config(tiny_models, train_file), tmp_path / "run", stop_event=stop,
                             pause_event=pause, callbacks=[pause_then_stop])
    assert finished.status == "stopped"
    assert [event.step for event in of_type(events, StepEvent)] == [1, 2]
    assert (tmp_path / "run" / "checkpoint" / "trainer.json").is_file()


def test_pause_blocks_steps_until_cleared(tiny_models, train_file, tmp_path):
    pause = threading.Event()
    arrivals: list[tuple[int, float]] = []
    window: dict[str, float | int] = {}

    def release_later():
        time.sleep(0.8)
        window["steps_seen_while_paused"] = len(arrivals)
        window["cleared"] = time.monotonic()
        pause.clear()

    def on_event(event):
        if isinstance(event, StepEvent):
            arrivals.append((event.step, time.monotonic()))
            if event.step == 3:
                window["paused"] = time.monotonic()
                pause.set()
                threading.Thread(target=release_later, daemon=True).start()

    config = make_config(tiny_models, train_file, max_steps=6, eval_every=6)
    finished, _ = train(config, tmp_path / "run", pause_event=pause, callbacks=[on_event])
    assert finished.status == "completed"
    assert [step for step, _ in arrivals] == [1, 2, 3, 4, 5, 6]
    assert window["steps_seen_while_paused"] == 3
    during = [step for step, at in arrivals if window["paused"] < at < window["cleared"]]
    assert during == []
    assert arrivals[3][1] >= window["cleared"]  # step 4 only after the pause was lifted


# --- gradient accumulation ----------------------------------------------------------------------------------------


class _Collate:
    @staticmethod
    def collate(rows):
        return rows

    @staticmethod
    def collate_labels(rows, labels):
        return torch.stack(labels)


def test_sampler_puts_the_same_rows_in_accumulated_batches():
    """The order is one seeded permutation per epoch, independent of the batch size, so micro-batches 2k and
    2k+1 of size 8 hold exactly the rows of batch k of size 16 -- within an epoch. At the end of an epoch of
    180 rows the 8 x 2 run's step 12 pairs the 4-row remainder with the next epoch's first batch, while the
    16 x 1 run's step 12 is the 4-row remainder alone, so the two runs agree step by step only within the first
    11 steps of the first epoch."""
    rows = [{"row": index} for index in range(180)]
    labels = torch.arange(180)
    small, large = Batches(rows, labels, 8, seed=3), Batches(rows, labels, 16, seed=3)
    for step in range(11):
        first, second = small.batch(2 * step, _Collate), small.batch(2 * step + 1, _Collate)
        together = large.batch(step, _Collate)
        assert first[0] + second[0] == together[0]
        assert torch.equal(torch.cat([first[1], second[1]]), together[1])
    assert len(small.batch(22, _Collate)[0]) == 4 and len(large.batch(11, _Collate)[0]) == 4
    # Every row once per epoch, in a different order each epoch.
    epoch0 = [row["row"] for index in range(12) for row in large.batch(index, _Collate)[0]]
    epoch1 = [row["row"] for index in range(12, 24) for row in large.batch(index, _Collate)[0]]
    assert sorted(epoch0) == sorted(epoch1) == list(range(180)) and epoch0 != epoch1


def test_gradient_accumulation_matches_a_bigger_batch(tiny_models, train_file, tmp_path, monkeypatch):
    recorded: dict[str, list] = {}

    class RecordingAdamW(torch.optim.AdamW):
        """Records the gradients the optimizer is about to apply (Adam's update is nearly the sign of the
        gradient on the first step, so comparing updates alone would hide a wrongly scaled gradient)."""

        def step(self, closure=None):
            recorded.setdefault(self.label, []).append(
                [p.grad.detach().clone() for group in self.param_groups for p in group["params"]])
            return super().step(closure)

    results = {}
    for label, batch, accumulation in (("8x2", 8, 2), ("16x1", 16, 1)):
        RecordingAdamW.label = label
        monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
        # fp32: bf16 rounds a batch of 16 and two of 8 (padded to other widths) differently
        config = make_config(tiny_models, train_file, max_steps=3, eval_every=1, batch_size=batch,
                             gradient_accumulation=accumulation, warmup_ratio=0.0, precision="fp32")
        _, events = train(config, tmp_path / label)
        results[label] = events

    for step in range(3):
        for small, large in zip(recorded["8x2"][step], recorded["16x1"][step]):
            assert large.abs().max() > 0
            assert torch.allclose(small, large, rtol=1e-4, atol=1e-5), f"gradient of step {step + 1} differs"
    losses = {label: [event.loss for event in of_type(results[label], StepEvent)] for label in ("8x2", "16x1")}
    assert losses["8x2"] == pytest.approx(losses["16x1"], abs=1e-5)
    assert [e.examples_per_s > 0 for e in of_type(results["8x2"], StepEvent)] == [True] * 3
    # Same data, same gradients: same parameters after the steps (the exported best state).
    small_vector = load_file(str(tmp_path / "8x2" / "vector.safetensors"))
    large_vector = load_file(str(tmp_path / "16x1" / "vector.safetensors"))
    for key in small_vector:
        assert torch.allclose(small_vector[key], large_vector[key], atol=1e-5), key


def test_first_step_update_matches_with_accumulation(tiny_models, train_file, tmp_path):
    """One optimizer step from the same start: 8 x 2 and 16 x 1 move the parameters the same way."""
    vectors = {}
    for label, batch, accumulation in (("8x2", 8, 2), ("16x1", 16, 1)):
        config = make_config(tiny_models, train_file, max_steps=1, eval_every=1, batch_size=batch,
                             gradient_accumulation=accumulation, warmup_ratio=0.0)
        finished, events = train(config, tmp_path / label)
        assert [event.step for event in of_type(events, StepEvent)] == [1]
        assert of_type(events, StepEvent)[0].lr == LR
        vectors[label] = load_file(str(tmp_path / label / "vector.safetensors"))
    assert vectors["8x2"]["projected.z"].abs().max() == pytest.approx(LR, rel=1e-3)  # Adam's first step ~ lr
    for key in vectors["8x2"]:
        assert torch.allclose(vectors["8x2"][key], vectors["16x1"][key], atol=1e-5), key


# --- early stopping and the best checkpoint ------------------------------------------------------------------


def test_early_stopping(tiny_models, train_file, tmp_path):
    # a rate too small to move z in float32 (a rate of 0 is refused): no evaluation improves on the first
    config = make_config(tiny_models, train_file, max_steps=20, eval_every=2, lr=1e-300, early_stopping_patience=1)
    finished, events = train(config, tmp_path / "run")
    assert finished.status == "early-stopped"
    assert [event.step for event in of_type(events, EvalEvent)] == [2, 4]
    assert [event.is_best for event in of_type(events, EvalEvent)] == [True, False]
    assert of_type(events, StepEvent)[-1].step == 4
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["status"] == "early-stopped" and summary["train_steps"] == 4 and summary["best_step"] == 2
    assert torch.equal(load_file(str(tmp_path / "run" / "vector.safetensors"))["projected.z"], torch.zeros(D))


@pytest.mark.parametrize(("score", "loss", "best", "best_loss", "lower_is_better", "improves"), [
    (0.0, 0.61, None, None, False, True),  # the first evaluation
    (0.1, 0.70, 0.0, 0.61, False, True),  # a better metric, whatever the loss
    (0.0, 0.59, 0.0, 0.61, False, True),  # Matthews stuck at 0 (all majority class) while the loss falls
    (0.0, 0.61, 0.0, 0.61, False, False),  # nothing moved
    (0.0, 0.63, 0.0, 0.61, False, False),
    (-0.1, 0.50, 0.0, 0.61, False, False),  # a worse metric at a lower loss
    (0.2, 0.50, 0.3, 0.61, True, True),  # a lower-is-better metric (mse)
    (0.0, None, 0.0, None, False, False),  # a task that reports no loss: a tie is no improvement
])
def test_a_tie_of_the_metric_is_broken_by_the_validation_loss(score, loss, best, best_loss, lower_is_better,
                                                               improves):
    assert beats_best(score, loss, best, best_loss, lower_is_better) is improves


def test_exported_vector_is_the_best_evaluation(tiny_models, train_file, tmp_path):
    config = make_config(tiny_models, train_file, max_steps=24, eval_every=2, lr=1.0, seed=1)  # a jumpy run
    finished, events = train(config, tmp_path / "run")
    run_dir = tmp_path / "run"
    evaluations = of_type(events, EvalEvent)
    accuracies = [event.metrics["accuracy"] for event in evaluations]
    # Precondition: the last evaluation is worse than the best, so exporting the final state would show.
    assert accuracies[-1] < max(accuracies), accuracies
    # is_best marks exactly the evaluations that beat every earlier one: a higher accuracy, or the same at a lower
    # validation loss.
    ranks = [(event.metrics["accuracy"], -event.metrics["loss"]) for event in evaluations]
    assert [event.is_best for event in evaluations] == \
        [index == 0 or rank > max(ranks[:index]) for index, rank in enumerate(ranks)]
    best_event = [event for event in evaluations if event.is_best][-1]

    vector = load_file(str(run_dir / "vector.safetensors"))
    best = load_file(str(run_dir / "best.safetensors"))
    assert set(vector) == set(best)
    for key in vector:
        assert torch.equal(vector[key], best[key]), key
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["accuracy"] == max(accuracies) == best_event.metrics["accuracy"]
    assert summary["best_step"] == best_event.step
    assert summary["loss"] == pytest.approx(best_event.metrics["loss"], abs=1e-9)
    # The restored vector scores the same on the validation rows.
    restored = vector_file.restore(run_dir / "vector.safetensors")
    data = load_task_data(config.data, config.training.seed)
    rows, _ = restored.encoder.encode(data.validation.texts)
    logits = predict_logits(restored.model, restored.encoder, rows, pick_device("cpu"),
                            precision=restored.metadata["precision"])  # as the run evaluated it
    assert metrics.accuracy(data.validation.labels, logits.argmax(1)) == summary["accuracy"]


def test_predictions_keep_the_input_order_across_length_sorted_batches(completed):
    """Batching by length must not mix rows up: every row gets the logits it gets alone."""
    _, run_dir, _, _ = completed
    restored = vector_file.restore(run_dir / "vector.safetensors")
    texts = ["good", "a long and winding sentence that goes on and on about a film", "bad", "fine film, I think"]
    rows, _ = restored.encoder.encode(texts)
    together = predict_logits(restored.model, restored.encoder, rows, pick_device("cpu"), batch_size=2)
    alone = np.concatenate([predict_logits(restored.model, restored.encoder, [row], pick_device("cpu"))
                            for row in rows])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert not np.allclose(together[0], together[1])


# --- run folders and locks ----------------------------------------------------------------------------------------


def test_existing_run_folder_needs_resume(completed):
    config, run_dir, _, _ = completed
    failures = []
    with pytest.raises(ArtifactError, match="already holds a run"):
        Trainer(config, run_dir, callbacks=[failures.append]).run()
    assert len(failures) == 1 and isinstance(failures[0], FailedEvent) and failures[0].user_error


def test_second_trainer_on_a_locked_folder(tiny_models, train_file, tmp_path):
    run_dir = tmp_path / "run"
    stop, pause, paused = threading.Event(), threading.Event(), threading.Event()

    def hold(event):
        if isinstance(event, StepEvent) and event.step == 1:
            pause.set()
            paused.set()

    outcome = {}
    first = threading.Thread(target=lambda: outcome.setdefault("first", Trainer(
        make_config(tiny_models, train_file), run_dir, callbacks=[hold], stop_event=stop, pause_event=pause).run()))
    first.start()
    try:
        assert paused.wait(120), "the first trainer never reached step 1"
        lock = json.loads((run_dir / runs.LOCK_FILE).read_text())
        assert lock["pid"] > 0 and lock["host"] == socket.gethostname()
        with pytest.raises(ArtifactError, match="Another process is training"):
            Trainer(None, run_dir, resume=True).run()
    finally:
        stop.set()
        first.join(120)
    assert outcome["first"].status == "stopped"
    assert not (run_dir / runs.LOCK_FILE).exists()


# --- regression -------------------------------------------------------------------------------------------------


def test_regression_task(tiny_models, train_file, tmp_path):
    lines = train_file.read_text(encoding="utf-8").splitlines()[1:]
    table = ["text,score"]
    for index, line in enumerate(lines):
        sentence, label = line.rsplit("\t", 1)
        score = 0.8 * int(label) + 0.1 + 0.01 * (index % 7)  # fractional, so a regression task
        table.append('"' + sentence.replace('"', '""') + f'",{score:.2f}')
    csv = tmp_path / "scores.csv"
    csv.write_text("\n".join(table) + "\n", encoding="utf-8")
    config = make_config(tiny_models, csv, max_steps=10, eval_every=5)
    finished, events = train(config, tmp_path / "run")
    assert finished.status == "completed"
    assert events[0].plan["head_params"] == 32 + 1
    assert {event.metric_name for event in of_type(events, EvalEvent)} == {"pearson"}
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("pearson", "spearman", "mse"):
        assert math.isfinite(summary[key]) and summary[key] == finished.metrics[key]
    assert summary["metric"] == "pearson"
    assert "accuracy" not in summary
    # The reported correlations are those of the exported vector's predictions.
    recorded = json.loads((tmp_path / "run" / "vector.json").read_text())["base_dtype"]  # as `jrft eval` replays it
    restored = vector_file.restore(tmp_path / "run" / "vector.safetensors", base_dtype=recorded)
    assert restored.metadata["task"] == "regression" and restored.metadata["label_names"] is None
    data = load_task_data(config.data, config.training.seed)
    rows, _ = restored.encoder.encode(data.validation.texts)
    predictions = predict_logits(restored.model, restored.encoder, rows, pick_device("cpu"),
                                 precision=restored.metadata["precision"]).reshape(-1)
    assert summary["pearson"] == pytest.approx(scipy.stats.pearsonr(data.validation.labels, predictions)[0],
                                               abs=1e-6)
    assert summary["spearman"] == pytest.approx(
        scipy.stats.spearmanr(data.validation.labels, predictions)[0], abs=1e-6)


# --- metrics ------------------------------------------------------------------------------------------------------

# Three classes; rows are the true class, columns the prediction:
#   [[2, 1, 0],
#    [0, 3, 1],
#    [1, 0, 2]]
LABELS3 = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
PREDICTIONS3 = [0, 0, 1, 1, 1, 2, 1, 2, 2, 0]


def test_confusion_matrix_and_accuracy():
    assert metrics.confusion_matrix(LABELS3, PREDICTIONS3, 3).tolist() == [[2, 1, 0], [0, 3, 1], [1, 0, 2]]
    assert metrics.accuracy(LABELS3, PREDICTIONS3) == 0.7
    assert math.isnan(metrics.accuracy([], []))


def test_macro_f1_by_hand():
    # F1 per class = 2 TP / (predicted + actual): 4/6, 6/8, 4/6 -> mean 25/36.
    assert metrics.macro_f1(LABELS3, PREDICTIONS3, 3) == pytest.approx(25 / 36)
    # A fourth class that neither occurs nor is predicted does not pull the mean down.
    assert metrics.macro_f1(LABELS3, PREDICTIONS3, 4) == pytest.approx(25 / 36)
    # A class that occurs but is never predicted counts as 0.
    assert metrics.macro_f1([0, 0, 1, 1], [0, 0, 0, 0], 2) == pytest.approx((2 * 2 / (4 + 2) + 0) / 2)


def test_matthews_by_hand():
    # Gorodkin: (c s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)) = (7*10 - 34) / (100 - 34) = 6/11.
    assert metrics.matthews(LABELS3, PREDICTIONS3, 3) == pytest.approx(6 / 11)
    # Two classes: the textbook (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]
    predictions = [1, 1, 0, 1, 0, 0, 1, 0, 0, 0]
    tp, tn, fp, fn = 3, 4, 1, 2
    textbook = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert textbook == pytest.approx(10 / math.sqrt(600))
    assert metrics.matthews(labels, predictions, 2) == pytest.approx(textbook)
    assert metrics.matthews(labels, labels, 2) == pytest.approx(1.0)
    assert metrics.matthews(labels, [1 - p for p in labels], 2) == pytest.approx(-1.0)
    assert metrics.matthews(labels, [0] * 10, 2) == 0.0  # constant predictions: defined as 0


def test_correlations_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 0.6 * x + rng.normal(size=50)
    y_tied = np.round(y)  # ties, where Spearman needs average ranks
    assert metrics.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)
    assert metrics.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
    assert metrics.spearman(x, y_tied) == pytest.approx(scipy.stats.spearmanr(x, y_tied)[0], abs=1e-12)
    assert metrics.pearson(x, np.ones(50)) == 0.0


def test_compute_classification_loss_is_cross_entropy():
    logits = np.array([[2.0, -1.0], [0.5, 0.25], [-3.0, 1.0]])
    labels = np.array([0, 1, 1])
    scores = metrics.compute("classification", labels, logits)
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels)).item()
    assert scores["loss"] == pytest.approx(expected, abs=1e-12)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert set(scores) == {"accuracy", "macro_f1", "matthews", "loss"}
