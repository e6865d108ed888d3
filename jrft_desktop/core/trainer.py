"""The training loop. It reports only through callbacks carrying frozen dataclasses (events.py) and obeys a
stop and a pause `threading.Event`, so the CLI, the Qt worker and tests drive it the same way.

Resumability by construction: the order of the data and every random draw depend only on (seed, step), so a
run resumed from a checkpoint takes exactly the steps an uninterrupted run would have taken."""

from __future__ import annotations

import contextlib
import math
import statistics
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import distributed, methods, metrics, runs
from .config import TrainingSpec, RunConfig
from .data import load_task_data
from .errors import UserError
from .events import (Callback, CheckpointEvent, EvalEvent, FailedEvent, FinishedEvent, PreparedEvent, StepEvent,
                     TrainerEvent)
from .export import save_vector, vector_metadata
from .inference import evaluate, peak_memory_mb, pick_device
from .methods.base import load_trainable_state, trainable_state
from .models import Encoder, JrftModel, load_backbone
from .paths import atomic_write_json

LOWER_IS_BETTER = {"loss", "mse"}


@dataclass
class Batches:
    """Tokenised examples, batched in a seeded order that depends only on (seed, epoch)."""

    rows: list[dict]
    labels: torch.Tensor
    batch_size: int
    seed: int

    def __post_init__(self):
        self.per_epoch = math.ceil(len(self.rows) / self.batch_size)
        self._order: tuple[int, torch.Tensor] | None = None

    def indices(self, index: int) -> list[int]:
        """The examples of batch `index` (counted across epochs)."""
        epoch, within = divmod(index, self.per_epoch)
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = (epoch, torch.randperm(len(self.rows), generator=generator))
        return self._order[1][within * self.batch_size:(within + 1) * self.batch_size].tolist()

    def batch(self, index: int, encoder: Encoder) -> tuple[dict, torch.Tensor]:
        return self.gather(self.indices(index), encoder)

    def gather(self, picked: Sequence[int], encoder: Encoder) -> tuple[dict, torch.Tensor]:
        return encoder.collate([self.rows[i] for i in picked]), self.labels[list(picked)]


def planned_steps(train_examples: int, training: TrainingSpec) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps) of a run on this many training examples."""
    steps_per_epoch = math.ceil(math.ceil(train_examples / training.batch_size) / training.gradient_accumulation)
    return steps_per_epoch, training.max_steps or max(1, math.ceil((training.epochs or 3) * steps_per_epoch))


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))


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

    # ------------------------------------------------------------------------------------------------------
    def _run(self, config: RunConfig) -> FinishedEvent:
        processes = self.processes
        started = time.perf_counter()
        training = config.training
        torch.manual_seed(training.seed)  # head and prompt initialisation
        data = load_task_data(config.data, training.seed)
        loaded = load_backbone(config.model)
        model, method, plan = methods.build(loaded, config.model.pooling, data.num_labels, config.method)
        encoder = Encoder(loaded.tokenizer, config.data.max_length, model)
        notes = list(data.notes)
        if plan.note:
            notes.append(plan.note)
        train_rows, truncated = encoder.encode(data.train.texts, data.train.pairs)
        validation_rows, truncated_val = encoder.encode(data.validation.texts, data.validation.pairs)
        if encoder.max_length < config.data.max_length:
            notes.append(f"max length {config.data.max_length} lowered to {encoder.max_length} tokens: the model has "
                         f"{model.positions()} positions and {model.prompt_count()} of them hold prompt tokens")
        if truncated or truncated_val:
            notes.append(f"{truncated} training and {truncated_val} validation texts were longer than "
                         f"{encoder.max_length} tokens and were truncated")
        if training.batch_size > len(train_rows):
            raise UserError(f"The batch size {training.batch_size} is larger than the {len(train_rows)} training "
                            f"examples; use a batch size of at most {len(train_rows)}.")
        device = distributed.device_for(processes, pick_device(training.device))
        model.to(device)
        label_dtype = torch.float32 if data.task == "regression" else torch.long
        batches = Batches(train_rows, torch.tensor(data.train.labels, dtype=label_dtype), training.batch_size,
                          training.seed)
        steps_per_epoch, total_steps = planned_steps(len(train_rows), training)
        eval_every = training.eval_every or max(1, total_steps // 10)
        checkpoint_every = training.checkpoint_every or eval_every
        warmup = int(round(training.warmup_ratio * total_steps))
        lr = training.lr if training.lr is not None else method.default_lr
        metric_name = metrics.default_metric(data.task) if training.metric == "auto" else training.metric
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=training.weight_decay)
        private = _start_private(config, model, method, optimizer, len(train_rows), total_steps, device, processes) \
            if config.privacy.enabled else None
        if private is not None:
            notes.append(_describe_private(private.plan))

        state = {"step": 0, "best": None, "best_step": None, "evals_since_best": 0, "history": [],
                 "step_times": []}
        restored = self._load_checkpoint(optimizer) if self.resume else None
        if restored is not None:
            load_trainable_state(model, restored[0])
            state.update(restored[1])
            if private is not None and "privacy" in state:
                private.load_state_dict(state["privacy"])  # ε continues where it stopped
            notes.append(f"resumed from step {state['step']}")
        if processes.parallel:
            notes.append(f"data-parallel over {processes.world_size} processes: each takes its part of every batch "
                         f"of {training.batch_size}")
        # Private steps take per-example gradients of the bare model and Opacus adds up the processes' parts.
        trained = distributed.data_parallel(model, device) if processes.parallel and private is None else model
        self.emit(PreparedEvent(total_steps, state["step"], len(train_rows), len(validation_rows), plan.to_dict(),
                                tuple(notes), private.plan.to_dict() if private is not None else None))

        autocast = self._autocast(device) if private is None else None  # per-example gradients stay in float32
        scaler = torch.amp.GradScaler("cuda") if autocast is not None and autocast.fast_dtype == torch.float16 \
            else None
        validation = (validation_rows, np.asarray(data.validation.labels))

        def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return _loss(logits.float(), labels, data.task)
        eval_seconds = 0.0
        status = "completed"
        while state["step"] < total_steps:
            if self._wait_while_paused():
                status = "stopped"
                break
            step = state["step"]
            tick = time.perf_counter()
            factor = lr_factor(step, total_steps, warmup, training.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
            torch.manual_seed(training.seed * 1_000_003 + step)  # dropout masks depend only on the step
            model.train(training.dropout)
            loss_total = 0.0
            examples = 0
            epsilon = None
            if private is not None:
                picked = private.sample()  # Poisson: its own secret randomness, a varying size
                physical = (_to_device(batches.gather(picked[start:start + training.batch_size], encoder), device)
                            for start in range(0, len(picked), training.batch_size))
                loss_total, examples = private.step(model, physical, task_loss)
                state["privacy"] = private.state_dict()
                epsilon = private.epsilon(live=True)
            else:
                for micro in range(training.gradient_accumulation):
                    picked = batches.indices(step * training.gradient_accumulation + micro)
                    mine = processes.share(picked)
                    # DistributedDataParallel averages the processes' gradients: weighting each process's mean loss
                    # by its share of the batch makes that average the gradient of the whole batch's mean loss.
                    weight = processes.world_size * len(mine) / len(picked)
                    examples += len(mine)
                    # A process left without examples (a short last batch) still joins the gradient exchange, with
                    # one example at weight 0.
                    inputs, labels = _to_device(batches.gather(mine or picked[:1], encoder), device)
                    syncing = micro == training.gradient_accumulation - 1 or not processes.parallel
                    with contextlib.nullcontext() if syncing else trained.no_sync():
                        with autocast or contextlib.nullcontext():
                            logits = trained(**inputs)
                        mean_loss = task_loss(logits, labels)
                        loss = mean_loss * weight / training.gradient_accumulation
                        (scaler.scale(loss) if scaler else loss).backward()
                    loss_total += mean_loss.item() * len(mine)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            elif private is None:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if processes.parallel:  # each process saw its part of the batch
                loss_total, examples = processes.sum([loss_total, examples])
            loss_sum = loss_total / max(1, examples)
            state["step"] = step + 1
            seconds = time.perf_counter() - tick
            state["step_times"].append(seconds)
            recent = state["step_times"][-20:]
            remaining = total_steps - state["step"]
            evals_left = remaining // eval_every
            eta = remaining * sum(recent) / len(recent) + evals_left * eval_seconds
            entry = {"step": state["step"], "loss": loss_sum, "lr": lr * factor}
            state["history"].append(entry if epsilon is None else {**entry, "epsilon": epsilon})
            self.emit(StepEvent(state["step"], total_steps, state["step"] / steps_per_epoch, loss_sum, lr * factor,
                                seconds, examples / seconds, eta, epsilon))

            last = state["step"] == total_steps
            if state["step"] % eval_every == 0 or last:
                tick = time.perf_counter()
                scores = evaluate(model, encoder, *validation, data.task, device, processes)
                eval_seconds = time.perf_counter() - tick
                improved = _better(scores[metric_name], state["best"], metric_name)
                if improved:
                    state.update(best=scores[metric_name], best_step=state["step"], evals_since_best=0)
                    if processes.writer:
                        runs.save_state_file(self.run_dir / runs.BEST_FILE, trainable_state(model))
                else:
                    state["evals_since_best"] += 1
                state["history"].append({"step": state["step"], "eval": scores})
                self.emit(EvalEvent(state["step"], scores, metric_name, improved))
                patience = training.early_stopping_patience
                if patience is not None and state["evals_since_best"] >= patience and not last:
                    status = "early-stopped"
                    break
            if state["step"] % checkpoint_every == 0 and not last:
                self._save_checkpoint(model, optimizer, state)
            if processes.sum([self.stop_event.is_set()])[0]:  # a stop in any process stops them all
                status = "stopped"
                break

        if status == "stopped":
            self._save_checkpoint(model, optimizer, state)
            finished = FinishedEvent("stopped", str(self.run_dir))
            self.emit(finished)
            return finished
        if not processes.writer:  # the writer alone scores the best checkpoint and exports
            return FinishedEvent(status, str(self.run_dir))

        last_eval = state["history"][-1].get("eval") if state["history"] else None
        if state["best_step"] == state["step"] and last_eval is not None:
            scores = last_eval  # the model in hand is the best one and was just evaluated
        else:
            best_file = self.run_dir / runs.BEST_FILE
            if best_file.is_file():
                load_trainable_state(model, runs.load_state_file(best_file))
            scores = evaluate(model, encoder, *validation, data.task, device)
        timed = state["step_times"][1:] or state["step_times"]  # the first step pays for warm-up
        summary = {
            "status": status, "method": plan.method, "trainable_params": plan.trainable_params,
            "trainable_params_without_head": plan.method_params, "head_params": plan.head_params,
            "d": plan.size if plan.size_name == "d" else None, "size_name": plan.size_name, "size": plan.size,
            "position": plan.position, "pooling": model.pooling, "train_steps": state["step"],
            "best_step": state["best_step"], "metric": metric_name, "lr": lr,
            "step_time_s": statistics.median(timed) if timed else None,
            "examples_per_s": training.batch_size * training.gradient_accumulation / statistics.median(timed)
            if timed else None,
            "peak_memory_mb": peak_memory_mb(device), "device": str(device), "processes": processes.world_size,
            "train_examples": len(train_rows), "validation_examples": len(validation_rows),
            "validation_source": data.validation_source, "wall_time_s": time.perf_counter() - started,
            **scores,
        }
        if private is not None:
            summary["privacy"] = private.record()
        metadata = vector_metadata(
            model=model, plan=plan, method_spec=replace(config.method, name=plan.method), model_spec=config.model,
            max_length=config.data.max_length, task=data.task, label_names=data.label_names,
            columns={"text": data.text_column, "text_pair": data.text_pair_column, "label": data.label_column},
            seed=training.seed, metrics={k: v for k, v in summary.items() if isinstance(v, (int, float))},
        )
        report: tuple[Path, ...] = ()
        if private is not None:
            from .privacy import write_report

            metadata["privacy"] = summary["privacy"]
            title = f"{plan.method} on {Path(config.data.train).name}"
            report = (write_report(self.run_dir, summary["privacy"], title),)
        files = (*save_vector(self.run_dir / runs.VECTOR_NAME, model, metadata), *report)
        atomic_write_json(self.run_dir / runs.HISTORY_FILE, state["history"])
        atomic_write_json(self.run_dir / runs.METRICS_FILE, summary)  # written last: marks the run complete
        finished = FinishedEvent(status, str(self.run_dir), summary,
                                 tuple(str(p) for p in (*files, self.run_dir / runs.METRICS_FILE)))
        self.emit(finished)
        return finished

    def _save_checkpoint(self, model: JrftModel, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if self.processes.writer:
            path = runs.save_checkpoint(self.run_dir, trainable_state(model), optimizer, state)
            self.emit(CheckpointEvent(state["step"], str(path)))

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

    @staticmethod
    def _autocast(device: torch.device):
        if device.type != "cuda":
            return None
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)


def _to_device(batch: tuple[dict, torch.Tensor], device: torch.device) -> tuple[dict, torch.Tensor]:
    inputs, labels = batch
    return {k: v.to(device) for k, v in inputs.items()}, labels.to(device)


def _start_private(config: RunConfig, model: JrftModel, method: methods.Method, optimizer: torch.optim.Optimizer,
                   train_examples: int, total_steps: int, device: torch.device, processes: distributed.Processes):
    """Check and plan DP-SGD before any step is taken (refusals are PrivacyErrors)."""
    from . import privacy  # Opacus loads for private runs only

    training = config.training
    privacy.check_trainable_modules(model)
    plan = privacy.plan_privacy(config.privacy, train_examples, training.batch_size * training.gradient_accumulation,
                                total_steps)
    return privacy.PrivateTraining(plan, model, optimizer, device, processes, method)


def _describe_private(plan) -> str:
    target = (f"ε ≤ {plan.epsilon_target:g}" if plan.epsilon_target is not None
              else f"ε = {plan.epsilon_planned:.3g}")
    return (f"private training (DP-SGD): {target} at δ = {plan.delta:.3g} over {plan.steps} steps; noise multiplier "
            f"σ = {plan.noise_multiplier:.4g} ({plan.noise_source}), clipping norm C = {plan.max_grad_norm:g}, "
            f"Poisson sampling rate q = {plan.sample_rate:.4g}, {plan.accountant.upper()} accountant")


def _loss(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    if task == "regression":
        return torch.nn.functional.mse_loss(logits.squeeze(-1), labels)
    return torch.nn.functional.cross_entropy(logits, labels)


def _better(value: float, best: float | None, name: str) -> bool:
    if best is None:
        return True
    return value < best if name in LOWER_IS_BETTER else value > best
