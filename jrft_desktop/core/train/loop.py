"""The training loop. It reports only through callbacks carrying frozen dataclasses (events.py) and obeys a
stop and a pause `threading.Event`, so the CLI, the Qt worker and tests drive it the same way.

A run has four phases: prepare (data, model, method, optimizer, privacy: a `PreparedRun`), step (one optimizer
step, `Optimization`), evaluate-and-checkpoint, and finish (best state, metrics, vector). What changes while it
trains is one `TrainingState`, which is also what a checkpoint holds.

Resumability by construction: the order of the data and every random draw depend only on (seed, step), so a
run resumed from a checkpoint takes exactly the steps an uninterrupted run would have taken."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from .. import methods, runs
from ..audit.canaries import CanarySet, make_canary_set, write_record
from ..build import build_model
from ..config import RunConfig
from ..errors import PrivacyError, UserError
from ..events import (
    Callback,
    CheckpointEvent,
    EvalEvent,
    FailedEvent,
    FinishedEvent,
    PreparedEvent,
    StepEvent,
    TrainerEvent,
)
from ..export.vector import save_vector, vector_metadata
from ..inference import evaluate, peak_memory_mb, pick_device
from ..methods.base import load_trainable_state, trainable_state
from ..models import JrftModel, load_backbone
from ..paths import atomic_write_json
from ..tasks import Task, task_for
from ..tasks.base import TaskData
from . import distributed, quantization
from . import precision as precisions
from .batching import Batches, Schedule, fitted_batch
from .estimate import plan_memory, require_fits
from .step import Optimization, train_mode

AUDIT_ONLY = ("audit_canaries_trained",)  # the audit's canaries stay in the run folder, never in an export


def beats_best(score: float, loss: float | None, best: float | None, best_loss: float | None,
               lower_is_better: bool) -> bool:
    """Whether an evaluation improves on the best so far: a better score, or the same score at a lower validation
    loss. A metric stuck at its first value (Matthews 0 while every prediction is still the majority class) then
    neither stops a run that is learning early nor keeps its first, least trained state as the best."""
    if best is None:
        return True
    if score != best:
        return score < best if lower_is_better else score > best
    return loss is not None and best_loss is not None and loss < best_loss


@dataclass
class TrainingState:
    """Everything that changes while a run trains (besides tensors); a checkpoint stores it as JSON."""

    step: int = 0
    best: float | None = None
    best_step: int | None = None
    best_loss: float | None = None  # the validation loss of the best evaluation, which breaks a tie of the metric
    evals_since_best: int = 0
    history: list[dict] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    privacy: dict | None = None  # the privacy accountant's state (private runs)
    eval_time_s: float = 0.0  # seconds spent evaluating, all evaluations together
    last_eval_s: float = 0.0  # how long the last evaluation took, for the ETA; not saved

    def to_dict(self) -> dict:
        saved = asdict(self)
        del saved["last_eval_s"]
        if saved["privacy"] is None:
            del saved["privacy"]
        return saved

    @classmethod
    def from_dict(cls, saved: dict) -> TrainingState:
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in names})


@dataclass
class PreparedRun:
    """What `prepare` builds for a run: fixed while it trains."""

    config: RunConfig
    data: TaskData
    task: Task
    model: JrftModel
    plan: methods.MethodPlan
    encoder: object  # the task's encoder: encode(), collate() and collate_labels()
    batches: Batches
    validation_rows: list[dict]
    validation_labels: Sequence
    device: torch.device
    schedule: Schedule
    metric_name: str
    optimization: Optimization
    private: object | None  # privacy.PrivateTraining of a private run
    notes: list[str]
    precision: str = "fp32"  # what the model computes in, resolved on the device (precision.py)
    base_dtype: str = "fp32"  # what the frozen base's weights are held in (precision.resolve_base)
    estimated_memory: int = 0  # bytes: the estimate the run was admitted on (estimate.py), beside the measured peak
    canaries: CanarySet | None = None  # the audit's canaries, the included ones among the training rows


class Trainer:
    def __init__(self, config: RunConfig | None, run_dir: Path | str, callbacks: Iterable[Callback] = (),
                 stop_event: threading.Event | None = None, pause_event: threading.Event | None = None,
                 resume: bool = False):
        self.requested_config = config
        self.run_dir = Path(run_dir)
        self.callbacks = list(callbacks)
        self.stop_event = stop_event or threading.Event()
        self.pause_event = pause_event or threading.Event()
        self.resume = resume
        self.processes = distributed.Processes()

    def emit(self, event: TrainerEvent) -> None:
        if not self.processes.writer:  # one process of a data-parallel run reports
            return
        for callback in self.callbacks:
            callback(event)

    def run(self) -> FinishedEvent:
        """Train to the end (or until stopped). Errors are reported as a FailedEvent and raised again; a new run
        that fails before its first checkpoint leaves no files behind.

        Launched by torchrun or accelerate launch, every process runs this; they train data-parallel and only the
        first (the writer) touches the run folder."""
        self.processes = distributed.from_environment()
        joined = distributed.join(self.processes)
        self._config_shared = False
        try:
            if not self.processes.writer:
                return self._run(self._agreed_config())
            return self._run_as_writer()
        except Exception as error:
            if self.processes.writer and not self._config_shared:
                self.processes.from_writer({"error": str(error)})  # the others wait for a config: say why none comes
            raise
        finally:
            if joined:
                distributed.leave()

    def _agreed_config(self) -> RunConfig:
        """The writer checks and prepares the run folder; the other processes run the config it settled on, or
        fail with its message."""
        processes = self.processes
        if processes.writer:
            config = runs.prepare_run_dir(self.run_dir, self.requested_config, self.resume)
            processes.from_writer({"config": config.to_json()})
        else:
            settled = processes.from_writer(None)
            if "error" in settled:
                raise UserError(settled["error"])
            config = RunConfig.from_json(settled["config"])
        self._config_shared = True
        return config

    def _run_as_writer(self) -> FinishedEvent:
        before = {p.name for p in self.run_dir.iterdir()} if self.run_dir.is_dir() else None
        try:
            with runs.RunLock(self.run_dir):  # before the checks, so two processes never both pass them
                try:
                    return self._run(self._agreed_config())
                except Exception:
                    self._discard_unstarted(before)
                    raise
        except UserError as error:
            self._remove_empty_new_folder(before)
            self.emit(FailedEvent(str(error), traceback.format_exc(), user_error=True))
            raise
        except Exception as error:
            self._remove_empty_new_folder(before)
            self.emit(FailedEvent(f"{type(error).__name__}: {error}", traceback.format_exc(), user_error=False))
            raise

    def _discard_unstarted(self, before: set[str] | None) -> None:
        """Remove the files a new run created, unless it got as far as a checkpoint (run under the lock)."""
        if self.resume or (self.run_dir / runs.CHECKPOINT_DIR).exists() or not self.run_dir.is_dir():
            return
        created = (runs.CONFIG_FILE, runs.BEST_FILE, runs.HISTORY_FILE, runs.METRICS_FILE,
                   f"{runs.VECTOR_NAME}.safetensors", f"{runs.VECTOR_NAME}.json")
        for name in created:
            if before is None or name not in before:
                (self.run_dir / name).unlink(missing_ok=True)

    def _remove_empty_new_folder(self, before: set[str] | None) -> None:
        """A failed run leaves no empty folder behind: one it made itself, or one made empty for a new run."""
        if before is None or (not before and not self.resume):
            with contextlib.suppress(OSError):  # not empty (or gone): not ours to remove
                self.run_dir.rmdir()

    # --- the four phases -----------------------------------------------------------------------------------
    def _run(self, config: RunConfig) -> FinishedEvent:
        started = time.perf_counter()
        run = self._prepare(config)
        state = self._restore_state(run)
        self.emit(PreparedEvent(run.schedule.total_steps, state.step, len(run.batches.rows), len(run.validation_rows),
                                run.plan.to_dict(), tuple(run.notes),
                                run.private.plan.to_dict() if run.private is not None else None,
                                run.schedule.converges, run.schedule.describe_length()))
        status = "completed"
        while state.step < run.schedule.total_steps:
            if self._wait_while_paused():
                status = "stopped"
                break
            self.emit(self._step(run, state))
            status = self._evaluate_and_checkpoint(run, state) or status
            if status != "completed":
                break
        if status == "stopped":
            self._save_checkpoint(run.model, run.optimization.optimizer, state)
            finished = FinishedEvent("stopped", str(self.run_dir), reason=_stop_reason(run, state, status))
            self.emit(finished)
            return finished
        if not self.processes.writer:  # the writer alone scores the best checkpoint and exports
            return FinishedEvent(status, str(self.run_dir), reason=_stop_reason(run, state, status))
        return self._finish(run, state, status, time.perf_counter() - started)

    def _prepare(self, config: RunConfig) -> PreparedRun:
        """Data, model, method, encoder, optimizer and privacy plan; every refusal happens here, before a step."""
        processes, training = self.processes, config.training
        torch.manual_seed(training.seed)  # head and prompt initialisation
        task = task_for(config.data.task, config.data.train)
        data = task.load_data(config.data, training.seed)
        device = distributed.device_for(processes, pick_device(training.device))
        # Private steps take per-example gradients of the bare model in fp32; its base is then fp32 too.
        precision = "fp32" if config.privacy.enabled else precisions.resolve(training.precision, device)
        base_dtype = precisions.resolve_base(training.base_dtype, precision, config.method.name, device)
        loaded = load_backbone(config.model, task, precisions.BASE_TORCH_DTYPES[base_dtype])
        model, method, plan = build_model(config.model, config.method, task, data.num_labels, loaded=loaded)
        precisions.keep_trainable_fp32(model)
        quantized = quantization.quantize_base(model, training.base_quantization, device)
        encoder = task.make_encoder(loaded.tokenizer, config.data.max_length, model, config.data)
        notes = [*data.notes, *([plan.note] if plan.note else []), *task.model_notes(model), *encoder.notes]
        train_rows, truncated = task.encode(encoder, data.train)
        validation_rows, truncated_val = task.encode(encoder, data.validation)
        if encoder.max_length < config.data.max_length:
            notes.append(f"max length {config.data.max_length} lowered to {encoder.max_length} tokens: the model has "
                         f"{model.positions()} positions and {model.prompt_count()} of them hold prompt tokens")
        if truncated or truncated_val:
            notes.append(task.truncation_note(truncated, truncated_val, encoder.max_length))
        if training.batch_size > len(train_rows):
            notes.append(f"batch size {training.batch_size} lowered to {len(train_rows)}: the training set has "
                         f"{len(train_rows)} examples")
            training = fitted_batch(training, len(train_rows))
            config = replace(config, training=training)
        config, memory = _fit_memory(config, task, model, plan, encoder, train_rows, precision, base_dtype, notes)
        training = config.training
        if base_dtype != "fp32":
            notes.append(f"the frozen base model is held in {base_dtype} (what trains, and its optimizer state, "
                         "in fp32)")
        if quantized:
            notes.append(quantized)
        model.to(device)
        batches, canaries, owners = _training_batches(config, task, data, encoder, train_rows, notes)
        schedule = Schedule.plan(training, _sampled(batches, owners), plan.default_lr, len(validation_rows),
                                 config.privacy.enabled)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=schedule.lr,
                                      weight_decay=training.weight_decay)
        private = _start_private(config, model, method, optimizer, len(batches.rows), owners, schedule.total_steps,
                                 device, processes) if config.privacy.enabled else None
        if private is not None:
            notes.append(_describe_private(private.plan, private.units))
        if processes.parallel:
            notes.append(f"data-parallel over {processes.world_size} processes: each takes its part of every batch "
                         f"of {training.batch_size}")
        # Private steps take per-example gradients of the bare model (in float32) and Opacus adds up the processes'
        # parts.
        trained = distributed.data_parallel(model, device) if processes.parallel and private is None else model
        if private is not None and training.precision == "bf16":
            notes.append("private training computes in fp32 (per-example gradients), not bf16")
        optimization = Optimization.create(trained, optimizer, task.loss_function(data.problem), device,
                                           precision=precision)
        metric_name = task.default_metric(data) if training.metric == "auto" else training.metric
        return PreparedRun(config, data, task, model, plan, encoder, batches, validation_rows, data.validation.labels,
                           device, schedule, metric_name, optimization, private, notes, precision, base_dtype,
                           canaries=canaries, estimated_memory=memory.total)

    def _restore_state(self, run: PreparedRun) -> TrainingState:
        """A fresh state, or a resumed run's checkpoint (trainable tensors, optimizer, privacy accountant)."""
        restored = self._load_checkpoint(run.optimization.optimizer) if self.resume else None
        if restored is None:
            return TrainingState()
        load_trainable_state(run.model, restored[0])
        state = TrainingState.from_dict(restored[1])
        if run.private is not None and state.privacy is not None:
            run.private.load_state_dict(state.privacy)  # ε continues where it stopped
        run.notes.append(f"resumed from step {state.step}")
        return state

    def _step(self, run: PreparedRun, state: TrainingState) -> StepEvent:
        """One optimizer step (private or not, over its micro-batches), recorded in `state`."""
        training, schedule = run.config.training, run.schedule
        tick = time.perf_counter()
        lr = schedule.lr_at(state.step)
        for group in run.optimization.optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(training.seed * 1_000_003 + state.step)  # dropout masks depend only on the step
        train_mode(run.model, training.dropout)
        epsilon = None
        if run.private is not None:
            groups = run.private.sample()  # Poisson: its own secret randomness, a varying size
            physical = ((*_to_device(run.batches.gather(rows, run.encoder), run.device), owners)
                        for rows, owners in run.private.physical_batches(groups, training.batch_size))
            loss_total, examples = run.private.step(run.model, physical, run.optimization.loss_fn)
            run.optimization.optimizer.zero_grad(set_to_none=True)
            state.privacy = run.private.state_dict()
            epsilon = run.private.epsilon(live=True)
        else:
            loss_total, examples = self._accumulate(run, state.step)
            run.optimization.update()
        if self.processes.parallel:  # each process saw its part of the batch
            loss_total, examples = self.processes.sum([loss_total, examples])
        mean_loss = loss_total / max(1, examples)
        state.step += 1
        seconds = time.perf_counter() - tick
        state.step_times.append(seconds)
        entry = {"step": state.step, "loss": mean_loss, "lr": lr}
        state.history.append(entry if epsilon is None else {**entry, "epsilon": epsilon})
        return StepEvent(state.step, schedule.total_steps, state.step / schedule.steps_per_epoch, mean_loss, lr,
                         seconds, examples / seconds, _remaining_time(schedule, state, schedule.total_steps), epsilon,
                         schedule.converges, _eta_if_flat(schedule, state))

    def _accumulate(self, run: PreparedRun, step: int) -> tuple[float, int]:
        """Gradients of one step's micro-batches (this process's part of each); (summed loss, examples)."""
        processes, accumulation = self.processes, run.config.training.gradient_accumulation
        loss_total, examples = 0.0, 0
        for micro in range(accumulation):
            picked = run.batches.indices(step * accumulation + micro)
            mine = processes.share(picked)
            # DistributedDataParallel averages the processes' gradients: weighting each process's mean loss by its
            # share of the batch makes that average the gradient of the whole batch's mean loss.
            weight = processes.world_size * len(mine) / len(picked)
            examples += len(mine)
            # A process left without examples (a short last batch) still joins the gradient exchange, with one
            # example at weight 0.
            inputs, labels = _to_device(run.batches.gather(mine or picked[:1], run.encoder), run.device)
            syncing = micro == accumulation - 1 or not processes.parallel
            with contextlib.nullcontext() if syncing else run.optimization.model.no_sync():
                mean_loss = run.optimization.backward(inputs, labels, weight / accumulation)
            loss_total += mean_loss.item() * len(mine)
        return loss_total, examples

    def _evaluate_and_checkpoint(self, run: PreparedRun, state: TrainingState) -> str | None:
        """Evaluate, keep the best state and save a checkpoint when due; the status that ends the run, if any."""
        schedule, last = run.schedule, state.step == run.schedule.total_steps
        if state.step % schedule.eval_every == 0 or last:
            tick = time.perf_counter()
            scores = evaluate(run.model, run.encoder, run.validation_rows, run.validation_labels, run.data.problem,
                              run.device, self.processes, label_names=run.data.label_names, precision=run.precision)
            state.last_eval_s = time.perf_counter() - tick
            state.eval_time_s += state.last_eval_s
            score, loss = scores[run.metric_name], scores.get("loss")
            improved = beats_best(score, loss, state.best, state.best_loss, run.task.lower_is_better(run.metric_name))
            if improved:
                state.best, state.best_loss, state.best_step, state.evals_since_best = score, loss, state.step, 0
                if self.processes.writer:
                    runs.save_state_file(self.run_dir / runs.BEST_FILE, trainable_state(run.model))
            else:
                state.evals_since_best += 1
            state.history.append({"step": state.step, "eval": scores})
            self.emit(EvalEvent(state.step, scores, run.metric_name, improved))
            patience = schedule.patience
            if patience is not None and state.evals_since_best >= patience and not last:
                return "early-stopped"
        if state.step % schedule.checkpoint_every == 0 and not last:
            self._save_checkpoint(run.model, run.optimization.optimizer, state)
        if self.processes.sum([self.stop_event.is_set()])[0]:  # a stop in any process stops them all
            return "stopped"
        return None

    def _finish(self, run: PreparedRun, state: TrainingState, status: str, wall_time_s: float) -> FinishedEvent:
        """Score the best state, write the vector, the history and the metrics (last: it marks the run complete)."""
        summary = self._summary(run, state, status, wall_time_s)
        config, plan = run.config, run.plan
        metadata = vector_metadata(
            model=run.model, plan=plan, method_spec=plan.resolved(config.method), model_spec=config.model,
            max_length=config.data.max_length, problem=run.data.problem,
            label_names=run.data.label_names, columns=run.task.columns(run.data), seed=config.training.seed,
            metrics={k: v for k, v in summary.items() if isinstance(v, (int, float)) and k not in AUDIT_ONLY},
        )
        metadata["precision"] = run.precision  # what it trained and was evaluated in
        metadata["base_dtype"] = run.base_dtype  # what its frozen base was held in (`jrft eval` replays both)
        metadata["base_quantization"] = config.training.base_quantization
        report: tuple[Path, ...] = ()
        if run.private is not None:
            from ..privacy_report import write_report

            metadata["privacy"] = summary["privacy"]
            title = f"{plan.method} on {Path(config.data.train).name}"
            report = (write_report(self.run_dir, summary["privacy"], title),)
        files = (*save_vector(self.run_dir / runs.VECTOR_NAME, run.model, metadata), *report)
        atomic_write_json(self.run_dir / runs.HISTORY_FILE, state.history)
        if run.canaries is not None:  # what the audit regenerates them from: in the run folder, never exported
            write_record(self.run_dir, run.canaries)
        atomic_write_json(self.run_dir / runs.METRICS_FILE, summary)
        finished = FinishedEvent(status, str(self.run_dir), summary,
                                 tuple(str(p) for p in (*files, self.run_dir / runs.METRICS_FILE)),
                                 summary["stop_reason"])
        self.emit(finished)
        return finished

    def _summary(self, run: PreparedRun, state: TrainingState, status: str, wall_time_s: float) -> dict:
        """metrics.json: the plan, the timing and memory, and the best state's validation scores."""
        last_eval = state.history[-1].get("eval") if state.history else None
        if state.best_step == state.step and last_eval is not None:
            scores = last_eval  # the model in hand is the best one and was just evaluated
        else:
            best_file = self.run_dir / runs.BEST_FILE
            if best_file.is_file():
                load_trainable_state(run.model, runs.load_state_file(best_file))
            tick = time.perf_counter()
            scores = evaluate(run.model, run.encoder, run.validation_rows, run.validation_labels, run.data.problem,
                              run.device, label_names=run.data.label_names, precision=run.precision)
            state.eval_time_s += time.perf_counter() - tick
        training, plan = run.config.training, run.plan
        timed = state.step_times[1:] or state.step_times  # the first step pays for warm-up
        step_time = statistics.median(timed) if timed else None
        projection = run.model.adaptation.projection
        summary = {
            "status": status, "stop_reason": _stop_reason(run, state, status), "method": plan.method,
            "trainable_params": plan.trainable_params,
            "trainable_params_without_head": plan.method_params, "head_params": plan.head_params,
            "d": projection.spec.d if projection is not None else None, "size_name": plan.size_name, "size": plan.size,
            "position": plan.position, "pooling": run.model.pooling if run.task.pools else None,
            "train_steps": state.step, "planned_steps": run.schedule.total_steps,
            "until_converged": run.schedule.converges, "best_step": state.best_step, "metric": run.metric_name,
            "lr": run.schedule.lr,
            "step_time_s": step_time,
            "examples_per_s": training.batch_size * training.gradient_accumulation / step_time if timed else None,
            "peak_memory_mb": peak_memory_mb(run.device), "estimated_memory_mb": run.estimated_memory / 2 ** 20,
            "device": str(run.device),
            "processes": self.processes.world_size, "train_examples": len(run.batches.rows),
            "audit_canaries_trained": int(run.canaries.included.sum()) if run.canaries is not None else None,
            "validation_examples": len(run.validation_rows), "validation_source": run.data.validation_source,
            "wall_time_s": wall_time_s, "train_time_s": sum(state.step_times), "eval_time_s": state.eval_time_s,
            "precision": run.precision, "base_dtype": run.base_dtype, "group_by_length": training.group_by_length,
            "gradient_checkpointing": bool(training.gradient_checkpointing),  # as it ran: the user's, or turned on
            "padded_share": run.batches.padded_share(), **scores,
        }
        if run.private is not None:
            summary["privacy"] = run.private.record()
        return summary

    def _save_checkpoint(self, model: JrftModel, optimizer: torch.optim.Optimizer, state: TrainingState) -> None:
        if self.processes.writer:
            path = runs.save_checkpoint(self.run_dir, trainable_state(model), optimizer, state.to_dict())
            self.emit(CheckpointEvent(state.step, str(path)))

    def _load_checkpoint(self, optimizer: torch.optim.Optimizer) -> tuple[dict, dict] | None:
        """The writer first (it repairs a checkpoint a crash left half-replaced), then the other processes."""
        restored = runs.load_checkpoint(self.run_dir, optimizer) if self.processes.writer else None
        self.processes.barrier()
        return restored if self.processes.writer else runs.load_checkpoint(self.run_dir, optimizer)

    def _wait_while_paused(self) -> bool:
        """Block while paused; True when a stop was requested meanwhile (or before)."""
        while self.pause_event.is_set() and not self.stop_event.is_set():
            time.sleep(0.05)
        return self.stop_event.is_set()


def _training_batches(config: RunConfig, task: Task, data: TaskData, encoder, train_rows: list[dict],
                      notes: list[str]) -> tuple[Batches, CanarySet | None, list | None]:
    """The training rows in their seeded batches, with the included audit canaries among them (the validation rows
    never hold any), and whom each row belongs to when private training goes by a privacy unit (None: by row)."""
    training, labels, canaries = config.training, data.train.labels, None
    owners = list(data.train.units) if config.data.privacy_unit and config.privacy.enabled else None
    if config.data.privacy_unit and owners is None:
        notes.append(f"the privacy unit '{config.data.privacy_unit}' matters only to private training (ε); it is "
                     "not used here")
    if config.privacy.audit_canaries:
        canaries = make_canary_set(task, data, encoder, config.privacy.audit_canaries, training.seed)
        train_rows, labels = canaries.mixed_into(train_rows, labels)
        if owners is not None:  # each canary is a person of its own
            owners += [("canary", index) for index in np.flatnonzero(canaries.included).tolist()]
        notes.append(canaries.note())
    return Batches(train_rows, labels, training.batch_size, training.seed, task.row_lengths(train_rows),
                   training.group_by_length, training.gradient_accumulation), canaries, owners


def _sampled(batches: Batches, owners: list | None) -> int:
    """What a step samples from, and an epoch passes over: the training rows, or the people they belong to."""
    return len(set(owners)) if owners is not None else len(batches.rows)


def _remaining_time(schedule: Schedule, state: TrainingState, until: int) -> float:
    """Seconds to step `until`: its steps at the recent pace, and the evaluations due on the way."""
    recent = state.step_times[-20:]
    remaining = until - state.step
    return remaining * sum(recent) / max(1, len(recent)) + remaining // schedule.eval_every * state.last_eval_s


def _eta_if_flat(schedule: Schedule, state: TrainingState) -> float | None:
    """Seconds to the stop that early stopping makes if no evaluation improves any more; None while the last one
    improved (the run may go on to its end) or without early stopping. The ETA refined as the curve flattens."""
    if schedule.patience is None or state.evals_since_best == 0:
        return None
    next_eval = -(-state.step // schedule.eval_every) * schedule.eval_every
    evaluations_left = max(0, schedule.patience - state.evals_since_best - 1)
    stop = min(schedule.total_steps, next_eval + evaluations_left * schedule.eval_every)
    return _remaining_time(schedule, state, stop) + state.last_eval_s


def _stop_reason(run: PreparedRun, state: TrainingState, status: str) -> str:
    """Why the run ended, in a sentence (the Train page and metrics.json show it)."""
    schedule, metric = run.schedule, run.metric_name
    best = f"the best {metric}, at step {state.best_step:,}, is kept" if state.best_step else "nothing was evaluated"
    if status == "stopped":
        return f"stopped at step {state.step:,} of {schedule.total_steps:,}; resume it to go on"
    if status == "early-stopped":
        return (f"converged: {metric} did not improve in the last {schedule.patience} evaluations "
                f"(one every {schedule.eval_every:,} steps); {best}")
    if schedule.converges:
        return (f"reached its ceiling of {schedule.total_steps:,} steps "
                f"({schedule.total_steps / schedule.steps_per_epoch:.3g} epochs) before {metric} stopped improving; "
                f"{best}")
    return f"trained the {schedule.describe_length()} asked for; {best}"


def _fit_memory(config: RunConfig, task, model: JrftModel, plan, encoder, train_rows, precision: str,
                base_dtype: str, notes: list[str]):
    """The run's memory plan, refused when it will not fit; gradient checkpointing turned on (with a note) where it
    is what makes the run fit. Returns the config as it will run, and the plan."""
    training = config.training
    # the longest batch is as long as the longest row the maximum length leaves
    longest = min(encoder.max_length, max(task.row_lengths(train_rows), default=encoder.max_length))
    memory = plan_memory(model.info, plan, training.batch_size, longest, training.gradient_checkpointing,
                         task.outputs_per_token(model), precision, base_dtype)
    require_fits(memory, training.batch_size, plan, training.gradient_checkpointing)
    if memory.checkpointing and not training.gradient_checkpointing:
        notes.append(memory.note)
        config = replace(config, training=replace(training, gradient_checkpointing=True))
    notes.append(f"memory: {memory.describe()}")
    if config.training.gradient_checkpointing:
        model.base().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return config, memory


def _to_device(batch: tuple[dict, torch.Tensor], device: torch.device) -> tuple[dict, torch.Tensor]:
    inputs, labels = batch
    return {k: v.to(device) for k, v in inputs.items()}, labels.to(device)


def _start_private(config: RunConfig, model: JrftModel, method: methods.Method, optimizer: torch.optim.Optimizer,
                   train_examples: int, owners: list | None, total_steps: int, device: torch.device,
                   processes: distributed.Processes):
    """Check and plan DP-SGD before any step is taken (refusals are PrivacyErrors); by privacy unit when `owners`
    names whom each training row belongs to."""
    from . import privacy  # Opacus loads for private runs only

    training, most = config.training, config.privacy.max_rows_per_unit
    privacy.check_trainable_modules(model)
    units = privacy.PrivacyUnits.of(config.data.privacy_unit, owners, most) if owners is not None else None
    if units is not None and most > training.batch_size:
        raise PrivacyError(f"At most {most} rows per privacy unit is more than the batch size {training.batch_size}: "
                           "a unit's rows are clipped together in one batch; lower max_rows_per_unit "
                           "(--max-rows-per-unit) or raise the batch size.")
    plan = privacy.plan_privacy(config.privacy, len(units.rows) if units is not None else train_examples,
                                training.batch_size * training.gradient_accumulation, total_steps)
    return privacy.PrivateTraining(plan, model, optimizer, device, processes, method, units)


def _describe_private(plan, units) -> str:
    target = (f"ε ≤ {plan.epsilon_target:g}" if plan.epsilon_target is not None
              else f"ε = {plan.epsilon_planned:.3g}")
    return (f"private training (DP-SGD): {target} at δ = {plan.delta:.3g} over {plan.steps} steps; noise multiplier "
            f"σ = {plan.noise_multiplier:.4g} ({plan.noise_source}), clipping norm C = {plan.max_grad_norm:g}, "
            f"Poisson sampling rate q = {plan.sample_rate:.4g}, {plan.accountant.upper()} accountant"
            + (f"; {units.describe()}" if units is not None else ""))
