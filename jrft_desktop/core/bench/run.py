"""Methods side by side, in one process, on the same data and hardware: `jrft bench` and the app's Compare page.

For every case (a method at a size) it measures
- the validation metric after the same number of steps, per seed (the same `Trainer` as `jrft train`; each run is
  a normal run folder under `runs/`, so a bench that stopped picks up the runs it had finished);
- the training step time, in interleaved rounds (a few steps of each case in turn, repeated), so load changes on
  a shared machine hit every case alike and the ratios to full finetuning stay fair;
- the floating-point operations of one step (torch's FlopCounterMode) and so the achieved FLOP/s, as a fraction
  of this machine's matrix-multiply peak measured in the same process;
- the peak memory: in a fresh process per case (forked from a server that has only imported the engine), since a
  process's peak RSS never goes down and would otherwise carry the previous case's peak. On CUDA the same child
  reports torch.cuda.max_memory_allocated;
- the inference latency of the trained model, as trained and merged into the base weights, against the
  untouched base model (interleaved likewise), and the size of its vector file.
SLaSh's d is also swept (the budget curve, which a compared SLaSh case at its position joins). Results:
results.json, results.md and PNG plots (matplotlib's Agg canvas, no GUI toolkit)."""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .. import methods
from ..build import build_model
from ..config import MethodSpec, RunConfig, TrainingSpec
from ..errors import UserError
from ..events import StepEvent
from ..models import load_skeleton
from ..paths import atomic_write_json
from ..tasks import task_for
from ..train.step import first_batches
from .cases import BenchSettings, curve_case, curve_method, run_converged
from .memory import measure_memory, memory_context
from .report import RESULTS_JSON, json_safe, write_results
from .results import BENCH_FORMAT, BenchProgress, BenchResult, CaseResult, CurvePoint, Reporter
from .timing import StepTimes, interleaved_latency, interleaved_step_times, matmul_peak, prepare_case, step_flops

SETTINGS_FILE = "bench.json"


RUNS_DIR = "runs"


# --- the bench ------------------------------------------------------------------------------------------------------


def _prepare_output(output: Path, settings: BenchSettings) -> None:
    if output.exists() and not output.is_dir():
        raise UserError(f"The bench output {output} is a file, not a folder.")
    marker = output / SETTINGS_FILE
    if output.is_dir() and any(output.iterdir()) and not marker.is_file():
        raise UserError(f"{output} already holds other files; choose a new or empty folder for the bench results.")
    try:
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, {"format": BENCH_FORMAT, "settings": settings.to_dict()})
    except OSError as error:
        raise UserError(f"Cannot write the bench results to {output}: {error.strerror or error}.") from None


def _same_config(config_file: Path, config: RunConfig) -> bool:
    """Whether a finished run was made with `config` (a field added since then counts at its default)."""
    try:
        return RunConfig.from_json(config_file.read_text(encoding="utf-8")) == config
    except (UserError, OSError):
        return False


def _train(settings: BenchSettings, spec: MethodSpec, seed: int, run_dir: Path, reporter: Reporter,
           title: str) -> dict:
    """One run with the normal trainer; a finished run with the same configuration is reused."""
    from .. import runs
    from ..train.loop import Trainer

    config = RunConfig(model=settings.model, data=settings.data, method=spec,
                       training=TrainingSpec(max_steps=settings.steps, batch_size=settings.batch_size,
                                             eval_every=settings.eval_every, metric=settings.metric, seed=seed,
                                             device=settings.device, early_stopping_patience=settings.patience))
    metrics_file, config_file = run_dir / runs.METRICS_FILE, run_dir / runs.CONFIG_FILE
    if metrics_file.is_file() and config_file.is_file() and _same_config(config_file, config):
        reporter.advance(f"{title}: reused the finished run in {run_dir.name}")
        return json.loads(metrics_file.read_text(encoding="utf-8"))
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished or different earlier run
    every = max(1, settings.steps // 5)

    def relay(event) -> None:
        if isinstance(event, StepEvent) and (event.step % every == 0 or event.step == 1):
            reporter.say(f"{title}: step {event.step}/{event.total_steps}, loss {event.loss:.3f}")

    reporter.say(f"{title}: training")
    finished = Trainer(config, run_dir, [relay], stop_event=reporter.stop_event).run()
    reporter.check()
    metrics = dict(finished.metrics)
    reporter.advance(f"{title}: {metrics['metric']} {metrics[metrics['metric']]:.4f}")
    return metrics


def _machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    memory_gib = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory_gib = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "memory_gib": memory_gib, "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def run_bench(settings: BenchSettings, output: Path, on_progress: Callable[[BenchProgress], None] | None = None,
              stop_event: threading.Event | None = None) -> BenchResult:
    """Run every measurement and write the results; `stop_event` stops it between steps (BenchCancelled).

    Accuracy first (every case and curve point, per seed, reusing finished runs), then speed, memory and latency,
    measured after all training so that nothing else runs beside them."""
    from ..inference import pick_device

    started = time.perf_counter()
    output = Path(output)
    settings, skipped = _applicable(settings)
    _check_settings(settings)
    device = pick_device(settings.device)
    _prepare_output(output, settings)
    memory_items = len(settings.cases) if settings.measure_memory else 1
    trainings = len(settings.seeds) * (len(settings.cases) + len(settings.curve))
    reported = trainings + memory_items + 3  # + timing, latency and the result files
    reporter = Reporter(reported, on_progress, stop_event or threading.Event())
    accuracy = _accuracy_runs(settings, output, reporter)
    data = task_for(settings.data.task, settings.data.train).load_data(settings.data, settings.seeds[0])
    speed = _measure_speed(settings, data, device, reporter)
    memory = _measure_memory(settings, data, device, reporter)
    latency = _measure_latency(settings, data, speed.encoder, output, device, reporter)
    first = next(iter(accuracy.runs.values()))[0]
    notes = [*skipped, *(f"{label}: {plan.note}" for label, plan in speed.plans.items() if plan.note)]
    cases = _case_results(settings, accuracy, speed, memory, latency)
    result = BenchResult(output=str(output), metric=accuracy.metric, cases=cases,
                         curve=_curve(settings, accuracy, cases), machine=_machine(device),
                         matmul_peak_flops=speed.matmul_peak, settings=settings.to_dict(),
                         wall_time_s=time.perf_counter() - started, train_examples=first["train_examples"],
                         validation_examples=first["validation_examples"],
                         validation_source=first["validation_source"], notes=tuple(notes))
    files = write_results(result, output)
    result = replace(result, files=tuple(str(path) for path in files), wall_time_s=time.perf_counter() - started)
    atomic_write_json(output / RESULTS_JSON, json_safe(result.to_dict()))
    reporter.advance(f"results in {output}")
    return result


def _applicable(settings: BenchSettings) -> tuple[BenchSettings, list[str]]:
    """The settings without the cases that do not apply to the model (BitFit on a model without biases), and a
    note for each of them."""
    task = task_for(settings.data.task, settings.data.train)
    skeleton = load_skeleton(settings.model, task)
    kept, skipped = [], []
    for case in settings.cases:
        try:
            build_model(settings.model, case.method, task, 2, loaded=skeleton, structure_only=True)
            kept.append(case)
        except UserError as error:
            skipped.append(f"{case.label}: not compared, {error}")
    return replace(settings, cases=tuple(kept)), skipped


def _check_settings(settings: BenchSettings) -> None:
    if not settings.cases:
        raise UserError("Choose at least one method to compare.")
    if min(settings.steps, settings.batch_size, settings.timing_rounds, settings.latency_rounds) < 1 or \
            not settings.seeds:
        raise UserError("The bench needs at least one step, a batch size of at least 1, one timing round and one "
                        "seed.")
    if any(d < 1 for d in settings.curve):
        raise UserError("Every d of the budget curve must be a positive whole number.")


@dataclass
class _Accuracy:
    runs: dict[str, list[dict]]  # case label -> metrics.json of each seed's run
    curve: dict[int, list[dict]]  # curve size -> the same
    metric: str


def _accuracy_runs(settings: BenchSettings, output: Path, reporter: Reporter) -> _Accuracy:
    """Every case and every point of the budget curve, trained once per seed (finished runs are reused)."""
    run_metrics = {case.label: [_train(settings, case.method, seed, output / RUNS_DIR / f"{case.label}-seed{seed}",
                                       reporter, f"{case.label}, seed {seed}") for seed in settings.seeds]
                   for case in settings.cases}
    swept = curve_method()
    curve_metrics: dict[int, list[dict]] = {}
    for size in settings.curve:
        point = curve_case(settings, size)
        curve_metrics[size] = [
            _train(settings, point.method, seed, output / RUNS_DIR / f"{point.label}-seed{seed}", reporter,
                   f"{swept.title} {swept.size_name}={size}, seed {seed}") for seed in settings.seeds]
    return _Accuracy(run_metrics, curve_metrics, next(iter(run_metrics.values()))[0]["metric"])


@dataclass
class _Speed:
    plans: dict[str, methods.MethodPlan]
    flops: dict[str, float]
    times: dict[str, StepTimes]
    matmul_peak: float
    encoder: object  # the task's encoder (the same for every case: one tokenizer and max length)


def _measure_speed(settings: BenchSettings, data, device: torch.device, reporter: Reporter) -> _Speed:
    """Step time of every case (interleaved rounds), FLOPs per step, and the matrix-multiply peak."""
    reporter.say("timing: loading every case")
    task = task_for(settings.data.task, settings.data.train)
    prepared = {case.label: prepare_case(settings, case.method, data.num_labels, data.problem, device)
                for case in settings.cases}
    encoder = next(iter(prepared.values())).encoder
    batches = first_batches(task, encoder, data.train, settings.batch_size, settings.steps_per_round, device)
    flops = {label: step_flops(case, *batches[0]) for label, case in prepared.items()}
    peak_size = 4096 if device.type == "cuda" else 1024 if settings.timing_rounds < 4 else 2048
    peak = matmul_peak(device, peak_size)

    def timing_round(index: int) -> None:
        reporter.check()
        reporter.say(f"timing: round {index}/{settings.timing_rounds} done" + (" (warm-up)" if index == 0 else ""))

    times = interleaved_step_times(prepared, batches, device, settings.timing_rounds, timing_round)
    peak = max(peak, matmul_peak(device, peak_size))  # the quieter of two tries
    steps = f"{settings.steps_per_round} step{'' if settings.steps_per_round == 1 else 's'}"
    reporter.advance(f"timing: done ({settings.timing_rounds} rounds of {steps})")
    return _Speed({label: case.plan for label, case in prepared.items()}, flops, times, peak, encoder)


def _measure_memory(settings: BenchSettings, data, device: torch.device, reporter: Reporter) -> dict[str, dict]:
    """Peak memory of every case, each in a fresh process."""
    if not settings.measure_memory:
        reporter.advance("memory: not measured")
        return {}
    memory: dict[str, dict] = {}
    job_base = {"settings": settings, "num_labels": data.num_labels, "problem": data.problem, "device": str(device),
                "threads": torch.get_num_threads(),
                "examples": data.train.take(settings.batch_size * settings.memory_steps)}
    with memory_context().Pool(1, maxtasksperchild=1) as pool:
        for case in settings.cases:
            reporter.check()
            reporter.say(f"memory: {case.label} (in a fresh process)")
            memory[case.label] = pool.apply(measure_memory, ({**job_base, "method": case.method},))
            reporter.advance(f"memory: {case.label} peaks at {memory[case.label]['peak_memory_mb']:.0f} MB")
    return memory


@dataclass
class _Latency:
    seconds: dict[str, float]  # "base", "<label>/trained", "<label>/merged" -> median seconds per batch
    vector_bytes: dict[str, int]


def _measure_latency(settings: BenchSettings, data, encoder, output: Path, device: torch.device,
                     reporter: Reporter) -> _Latency:
    """Inference time of the base model and of each trained model, as trained and merged (interleaved)."""
    from .. import runs
    from ..export.vector import restore

    reporter.say("latency: loading the trained models")
    unchanged = MethodSpec(name=methods.base_model_method().name)
    base = prepare_case(settings, unchanged, data.num_labels, data.problem, device).model
    variants: dict[str, torch.nn.Module] = {"base": base}
    vector_bytes: dict[str, int] = {}
    for case in settings.cases:
        vector = output / RUNS_DIR / f"{case.label}-seed{settings.seeds[0]}" / runs.VECTOR_FILE
        vector_bytes[case.label] = vector.stat().st_size
        restored = restore(vector)
        variants[f"{case.label}/trained"] = restored.model.to(device)
        if restored.method.foldable:
            merged = copy.deepcopy(restored.model)
            restored.method.merge(merged)
            variants[f"{case.label}/merged"] = merged.to(device)
    rows, _ = task_for(settings.data.task, settings.data.train).encode(encoder, data.validation.take(settings.batch_size
                                                                                 * settings.latency_batches))
    batches = [{k: v.to(device) for k, v in encoder.collate(rows[start:start + settings.batch_size]).items()}
               for start in range(0, len(rows), settings.batch_size)]
    seconds = interleaved_latency(variants, batches, device, settings.latency_rounds, reporter)
    reporter.advance("latency: done")
    return _Latency(seconds, vector_bytes)


def _case_results(settings: BenchSettings, accuracy: _Accuracy, speed: _Speed, memory: dict[str, dict],
                  latency: _Latency) -> tuple[CaseResult, ...]:
    cases = []
    base = latency.seconds["base"]
    for case in settings.cases:
        plan, merged = speed.plans[case.label], latency.seconds.get(f"{case.label}/merged")
        cases.append(CaseResult(
            label=case.label, method=plan.method, size_name=plan.size_name, size=plan.size, position=plan.position,
            method_params=plan.method_params, trainable_params=plan.trainable_params,
            foldable=methods.get_method(plan.method).foldable, seeds=tuple(settings.seeds),
            scores=tuple(float(m[accuracy.metric]) for m in accuracy.runs[case.label]),
            converged=tuple(run_converged(m, settings.steps // settings.eval_every)
                            for m in accuracy.runs[case.label]),
            train_steps=tuple(int(m["train_steps"]) for m in accuracy.runs[case.label]),
            step_time_s=statistics.median(speed.times[case.label].wall),
            step_cpu_s=statistics.median(speed.times[case.label].cpu), flops_per_step=speed.flops[case.label],
            peak_memory_mb=memory.get(case.label, {}).get("peak_memory_mb"),
            training_memory_mb=memory.get(case.label, {}).get("training_memory_mb"),
            latency_ratio=latency.seconds[f"{case.label}/trained"] / base,
            merged_latency_ratio=merged / base if merged is not None else None,
            vector_bytes=latency.vector_bytes[case.label]))
    return tuple(cases)


def _curve(settings: BenchSettings, accuracy: _Accuracy, cases: Sequence[CaseResult]) -> tuple[CurvePoint, ...]:
    """The budget curve; a compared case of the curve's method at its position is one more point of it (no second
    training)."""
    metric = accuracy.metric
    curve = [CurvePoint(size, runs_at[0]["trainable_params"], tuple(float(m[metric]) for m in runs_at))
             for size, runs_at in accuracy.curve.items()]
    if curve:
        swept = curve_method()
        where = (swept.name, settings.curve_position if swept.has_position else None)
        curve += [CurvePoint(case.size, case.trainable_params, case.scores) for case in cases
                  if (case.method, case.position) == where and case.size not in accuracy.curve]
    return tuple(sorted(curve, key=lambda point: point.d))
