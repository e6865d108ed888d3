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
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from . import methods
from .config import TrainingSpec, DataSpec, MethodSpec, ModelSpec, RunConfig
from .errors import UserError
from .events import StepEvent
from .formatting import format_bytes
from .models import load_backbone
from .tasks import Task, task_for
from .trainer import Optimization, autocast_for
from .paths import atomic_write, atomic_write_json, atomic_write_text, data_root, sample_data_dir

BENCH_FORMAT = "jrft-bench/1"
SETTINGS_FILE = "bench.json"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
CURVE_PNG = "budget_curve.png"
SPEED_PNG = "speed.png"
RUNS_DIR = "runs"
DEFAULT_BUDGET = 5000
DEFAULT_CURVE = (64, 256, 1024, 4096)
# The Compare page: each method trains until its validation metric stops improving (PATIENCE evaluations without a
# better one), at most COMPARE_STEPS steps, evaluated COMPARE_EVALUATIONS times; a run whose best evaluation was its
# last is marked "not converged" (its score was still rising).
COMPARE_STEPS = 300
COMPARE_EVALUATIONS = 10
COMPARE_PATIENCE = 2
ACCURACY_COLUMNS = ("method", "size", "trainable (with head)", "{metric}", "Δ vs full", "converged")
SPEED_COLUMNS = ("method", "step s", "step ÷ full", "CPU s ÷ full", "peak MB", "memory ÷ full", "training MB",
                 "training ÷ full", "GFLOP / step", "GFLOP/s", "% of matmul peak", "inference ÷ base", "merged ÷ base",
                 "vector", "vector ÷ full")
CURVE_COLUMNS = ("d", "trainable (with head)", "{metric}")


@dataclass(frozen=True)
class BenchCase:
    label: str
    method: MethodSpec


def default_cases(budget: int = DEFAULT_BUDGET) -> tuple[BenchCase, ...]:
    """Every method's cases as it declares them (`Method.bench_cases`: the sized ones at the same budget, SLaSh at
    each position, LoRA also at its usual rank 8), in the registry's order."""
    return tuple(BenchCase(label, spec) for method in methods.all_methods()
                 for label, spec in method.bench_cases(budget))


def quick_labels() -> tuple[str, ...]:
    """The quick bench's cases: the first of each method."""
    found = (method.bench_cases(DEFAULT_BUDGET) for method in methods.all_methods())
    return tuple(cases[0][0] for cases in found if cases)


QUICK_LABELS = quick_labels()


def curve_method() -> methods.Method:
    """The method whose size the budget curve sweeps: the registered one that declares `budget_curve` (SLaSh)."""
    return next(method for method in methods.all_methods() if method.budget_curve)


def curve_case(settings: BenchSettings, size: int) -> BenchCase:
    """The curve's run at one size, at the curve's position when its method has one (label e.g. slash-output-d64)."""
    method = curve_method()
    where = {"position": settings.curve_position} if method.has_position else {}
    label = "-".join((method.name, *where.values())) + f"-{method.size_name}{size}"
    return BenchCase(label, MethodSpec(name=method.name, **{method.size_name: size}, **where))


def _curve_title(settings: dict) -> str:
    """'SLaSh (output)': the curve's method, and its position when it has one."""
    method = curve_method()
    return method.title + (f" ({settings['curve_position']})" if method.has_position else "")


def pick_cases(labels: Sequence[str] | None, budget: int = DEFAULT_BUDGET,
               quick: bool = False) -> tuple[BenchCase, ...]:
    """The cases named by `labels` (all by default; the quick set with `quick`), in the catalogue's order."""
    catalogue = default_cases(budget)
    known = [case.label for case in catalogue]
    wanted = list(labels) if labels else list(quick_labels() if quick else known)
    unknown = [label for label in wanted if label not in known]
    if unknown:
        raise UserError(f"Unknown bench method {unknown[0]!r}; choose from: {', '.join(known)}.")
    return tuple(case for case in catalogue if case.label in wanted)


@dataclass(frozen=True)
class BenchSettings:
    model: ModelSpec
    data: DataSpec
    cases: tuple[BenchCase, ...]
    steps: int = 400
    batch_size: int = 32
    seeds: tuple[int, ...] = (0, 1, 2)
    metric: str = "auto"
    curve: tuple[int, ...] = DEFAULT_CURVE  # values of d for SLaSh (empty: no curve)
    curve_position: str = "output"
    timing_rounds: int = 8
    steps_per_round: int = 5
    memory_steps: int = 3
    latency_rounds: int = 5
    latency_batches: int = 4
    measure_memory: bool = True
    device: str = "auto"
    evaluations: int = 1  # validation evaluations per run (evenly spaced; the last at its end)
    patience: int | None = None  # stop a run after this many evaluations without improvement

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def eval_every(self) -> int:
        return max(1, self.steps // max(1, self.evaluations))


def compare_settings(model: ModelSpec, data: DataSpec, cases: tuple[BenchCase, ...], **overrides) -> BenchSettings:
    """The Compare page's bench: quick-sized timing, but every method trains until its validation metric stops
    improving (at most COMPARE_STEPS steps), so that a slow starter is not read as a worse method."""
    values = dict(steps=COMPARE_STEPS, evaluations=COMPARE_EVALUATIONS, patience=COMPARE_PATIENCE)
    return quick_settings(model, data, cases, **{**values, **overrides})


def run_converged(metrics: dict, evaluations: int) -> bool | None:
    """Whether a run's validation metric had stopped improving by its end (metrics.json): early-stopped, or its best
    evaluation came before its last. False: the last evaluation was the best, so the curve was still rising. None:
    a single evaluation cannot tell."""
    if metrics.get("status") == "early-stopped":
        return True
    if evaluations < 2 or metrics.get("best_step") is None:
        return None
    return metrics["best_step"] < metrics["train_steps"]


def quick_settings(model: ModelSpec, data: DataSpec, cases: tuple[BenchCase, ...], **overrides) -> BenchSettings:
    """A smoke-sized bench: a slice of the data, few steps, one seed, short timing."""
    values = dict(model=model, data=data, cases=cases, steps=30, batch_size=16, seeds=(0,), curve=(64,),
                  timing_rounds=3, steps_per_round=1, memory_steps=2, latency_rounds=2, latency_batches=1)
    return BenchSettings(**{**values, **overrides})


def sample_data(max_length: int = 64, max_train_rows: int | None = None) -> DataSpec:
    """The bundled SST-2 sample, scored on the GLUE SST-2 dev set."""
    sample = sample_data_dir()
    return DataSpec(train=str(sample / "sst2_train.tsv"), validation=str(sample / "sst2_dev.tsv"),
                    max_length=max_length, max_train_rows=max_train_rows)


def default_output() -> Path:
    return data_root() / "benchmarks" / time.strftime("%Y%m%d-%H%M%S")


# --- results ------------------------------------------------------------------------------------------------------
class _Scored:
    """The mean and the sample standard deviation of `scores` (one per seed)."""

    scores: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.scores) if len(self.scores) > 1 else None


@dataclass(frozen=True)
class CaseResult(_Scored):
    label: str
    method: str
    size_name: str | None
    size: int | None
    position: str | None
    method_params: int
    trainable_params: int
    foldable: bool
    seeds: tuple[int, ...]
    scores: tuple[float, ...]  # the metric per seed
    step_time_s: float | None = None
    step_cpu_s: float | None = None  # CPU seconds of the process per step: less sensitive to other programs' load
    flops_per_step: float | None = None
    peak_memory_mb: float | None = None
    training_memory_mb: float | None = None  # the peak above the loaded model and data
    converged: tuple[bool | None, ...] = ()  # per seed: run_converged
    train_steps: tuple[int, ...] = ()  # per seed: the steps it trained (fewer than the budget when early-stopped)
    latency_ratio: float | None = None  # inference as trained ÷ base model
    merged_latency_ratio: float | None = None  # merged into the weights ÷ base model; None: cannot be merged
    vector_bytes: int | None = None

    @property
    def size_text(self) -> str:
        return f"{self.size_name} {self.size:,}" if self.size_name else "–"

    @property
    def not_converged(self) -> bool:
        """Some seed's curve was still rising at the end of its steps."""
        return any(converged is False for converged in self.converged)

    @property
    def converged_text(self) -> str:
        if self.not_converged:
            return f"not converged (still rising at step {max(self.train_steps):,})"
        if self.converged and all(self.converged):
            return f"yes (stopped improving; {max(self.train_steps):,} steps)"
        return "–"


@dataclass(frozen=True)
class CurvePoint(_Scored):
    d: int
    trainable_params: int
    scores: tuple[float, ...]


@dataclass(frozen=True)
class BenchResult:
    output: str
    metric: str
    cases: tuple[CaseResult, ...]
    curve: tuple[CurvePoint, ...]
    machine: dict
    matmul_peak_flops: float
    settings: dict
    wall_time_s: float
    train_examples: int
    validation_examples: int
    validation_source: str
    files: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def case(self, label: str) -> CaseResult | None:
        return next((case for case in self.cases if case.label == label), None)

    def reference_case(self) -> CaseResult | None:
        """The compared case of the reference method (full finetuning), if the bench ran it."""
        reference = methods.reference_method().name
        return next((case for case in self.cases if case.method == reference), None)

    def ratio(self, case: CaseResult, name: str) -> float | None:
        """`case`'s value of `name` divided by full finetuning's (None without a full case or a value)."""
        full = self.reference_case()
        value, reference = getattr(case, name), getattr(full, name) if full else None
        return value / reference if value is not None and reference else None

    def achieved_flops(self, case: CaseResult) -> float | None:
        return case.flops_per_step / case.step_time_s if case.flops_per_step and case.step_time_s else None

    def to_dict(self) -> dict:
        def with_summary(item) -> dict:
            return {**asdict(item), "mean": item.mean, "std": item.std}

        cases = []
        for case in self.cases:
            achieved = self.achieved_flops(case)
            cases.append({**with_summary(case), "achieved_flops": achieved,
                          "peak_fraction": achieved / self.matmul_peak_flops if achieved else None,
                          "ratios_to_full": {name: self.ratio(case, name) for name in
                                             ("step_time_s", "step_cpu_s", "peak_memory_mb", "training_memory_mb",
                                              "vector_bytes", "trainable_params")}})
        return {"format": BENCH_FORMAT, "output": self.output, "metric": self.metric, "cases": cases,
                "curve": [with_summary(point) for point in self.curve], "machine": self.machine,
                "matmul_peak_flops": self.matmul_peak_flops, "settings": self.settings,
                "train_examples": self.train_examples, "validation_examples": self.validation_examples,
                "validation_source": self.validation_source,
                "wall_time_s": self.wall_time_s, "files": list(self.files), "notes": list(self.notes)}


@dataclass(frozen=True)
class BenchProgress:
    done: int
    total: int
    message: str


class BenchCancelled(UserError):
    """The bench was stopped before it finished (its finished runs stay and are reused next time)."""


# --- one training step, shared by the timing, the FLOP count and the memory child -----------------------------------
@dataclass
class PreparedCase:
    model: torch.nn.Module
    plan: methods.MethodPlan
    optimization: Optimization  # the trainer's own step: precision, loss, backward, update
    encoder: object  # the task's encoder: encode() and collate()


def prepare_case(settings: BenchSettings, spec: MethodSpec, num_labels: int, problem: str,
                 device: torch.device) -> PreparedCase:
    """A case's model with its method applied and the trainer's step for it, without dropout (as training)."""
    task = task_for(settings.data.task, settings.data.train)
    loaded = load_backbone(settings.model)
    model, method, plan = methods.build(loaded, settings.model.pooling, num_labels, spec, task)
    model.to(device).train(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=method.default_lr)
    optimization = Optimization.create(model, optimizer, task.loss_function(problem), device)
    return PreparedCase(model, plan, optimization, task.make_encoder(loaded.tokenizer, settings.data.max_length, model))


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_batches(task: Task, encoder, examples, batch_size: int, count: int,
                  device: torch.device) -> list[tuple[dict, torch.Tensor]]:
    """The first `count` batches of the given examples (cycled when there are fewer)."""
    rows, _ = task.encode(encoder, examples)
    batches = []
    for index in range(count):
        picked = [(index * batch_size + k) % len(rows) for k in range(batch_size)]
        batch = [rows[i] for i in picked]
        inputs = {key: value.to(device) for key, value in encoder.collate(batch).items()}
        batches.append((inputs, encoder.collate_labels(batch, [examples.labels[i] for i in picked]).to(device)))
    return batches


@dataclass
class StepTimes:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # process CPU seconds (all its threads)


def interleaved_step_times(prepared: dict[str, PreparedCase], batches: Sequence[tuple[dict, torch.Tensor]],
                           device: torch.device, rounds: int,
                           on_round: Callable[[int], None] | None = None) -> dict[str, StepTimes]:
    """Wall-clock and CPU seconds per training step of every case, measured round-robin: each round runs every case
    on the same batches; round 0 warms up and is not counted. On a shared machine the CPU time moves less with the
    other programs' load than the wall time does (with one torch thread it hardly moves at all)."""
    times = {label: StepTimes() for label in prepared}
    for round_index in range(rounds + 1):
        for label, case in prepared.items():
            for inputs, labels in batches:
                sync(device)
                tick, cpu_tick = time.perf_counter(), time.process_time()
                case.optimization.step(inputs, labels)
                sync(device)
                if round_index:
                    times[label].wall.append(time.perf_counter() - tick)
                    times[label].cpu.append(time.process_time() - cpu_tick)
        if on_round is not None:
            on_round(round_index)
    return times


def step_flops(case: PreparedCase, inputs: dict, labels: torch.Tensor) -> float:
    """Floating-point operations of one training step (matrix products and attention; elementwise work is not
    counted, as usual)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        case.optimization.step(inputs, labels)
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, size: int, repeats: int = 5) -> float:
    """The best FLOP/s of a square matrix product here, in the dtype training computes in."""
    autocast = autocast_for(device)
    dtype = autocast.fast_dtype if autocast is not None else torch.float32
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    best = math.inf
    for index in range(repeats + 1):
        sync(device)
        tick = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        if index:  # the first product warms up
            best = min(best, time.perf_counter() - tick)
    return 2 * size**3 / best


# --- memory: one fresh process per case ------------------------------------------------------------------------------
def measure_memory(job: dict) -> dict:
    """Runs in a child process: load, apply the method, train a few steps; the peak before and during training."""
    from .inference import peak_memory_mb

    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    settings: BenchSettings = job["settings"]
    prepared = prepare_case(settings, job["method"], job["num_labels"], job["task"], device)
    batches = first_batches(task_for(settings.data.task, settings.data.train), prepared.encoder, job["examples"],
                            settings.batch_size, settings.memory_steps, device)
    loaded = peak_memory_mb(device)
    for inputs, labels in batches:
        prepared.optimization.step(inputs, labels)
    peak = peak_memory_mb(device)
    return {"peak_memory_mb": peak, "training_memory_mb": max(0.0, peak - loaded)}


# Imported once in the forkserver rather than in every child (peft alone takes seconds).
PRELOADED = ("transformers.models.auto.modeling_auto", "transformers.models.auto.tokenization_auto", "peft")


def _memory_context():
    """A forkserver that has imported this module (so torch): each child starts from the same small state at once,
    without paying the imports again. Where there is no fork (Windows), a fresh interpreter per case."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, *PRELOADED])
        return context
    return multiprocessing.get_context("spawn")


# --- the bench ------------------------------------------------------------------------------------------------------
class _Reporter:
    def __init__(self, total: int, on_progress: Callable[[BenchProgress], None] | None,
                 stop_event: threading.Event):
        self.total, self.done = total, 0
        self.on_progress, self.stop_event = on_progress, stop_event

    def say(self, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(BenchProgress(self.done, self.total, message))

    def advance(self, message: str) -> None:
        self.done += 1
        self.say(message)

    def check(self) -> None:
        if self.stop_event.is_set():
            raise BenchCancelled("The bench was stopped; run it again into the same folder to continue (finished "
                                 "runs are reused).")


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


def _train(settings: BenchSettings, spec: MethodSpec, seed: int, run_dir: Path, reporter: _Reporter,
           title: str) -> dict:
    """One run with the normal trainer; a finished run with the same configuration is reused."""
    from . import runs
    from .trainer import Trainer

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
    from .inference import pick_device

    started = time.perf_counter()
    output = Path(output)
    settings, skipped = _applicable(settings)
    _check_settings(settings)
    device = pick_device(settings.device)
    _prepare_output(output, settings)
    memory_items = len(settings.cases) if settings.measure_memory else 1
    trainings = len(settings.seeds) * (len(settings.cases) + len(settings.curve))
    reported = trainings + memory_items + 3  # + timing, latency and the result files
    reporter = _Reporter(reported, on_progress, stop_event or threading.Event())
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
    atomic_write_json(output / RESULTS_JSON, _json_safe(result.to_dict()))
    reporter.advance(f"results in {output}")
    return result


def _applicable(settings: BenchSettings) -> tuple[BenchSettings, list[str]]:
    """The settings without the cases that do not apply to the model (BitFit on a model without biases), and a
    note for each of them."""
    from .models import JrftModel, load_skeleton

    skeleton = load_skeleton(settings.model)
    kept, skipped = [], []
    for case in settings.cases:
        try:
            methods.get_method(case.method.name).plan(case.method, JrftModel(skeleton, settings.model.pooling, 2))
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


def _accuracy_runs(settings: BenchSettings, output: Path, reporter: _Reporter) -> _Accuracy:
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


def _measure_speed(settings: BenchSettings, data, device: torch.device, reporter: _Reporter) -> _Speed:
    """Step time of every case (interleaved rounds), FLOPs per step, and the matrix-multiply peak."""
    reporter.say("timing: loading every case")
    task = task_for(settings.data.task, settings.data.train)
    prepared = {case.label: prepare_case(settings, case.method, data.num_labels, data.task, device)
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


def _measure_memory(settings: BenchSettings, data, device: torch.device, reporter: _Reporter) -> dict[str, dict]:
    """Peak memory of every case, each in a fresh process."""
    if not settings.measure_memory:
        reporter.advance("memory: not measured")
        return {}
    memory: dict[str, dict] = {}
    job_base = {"settings": settings, "num_labels": data.num_labels, "task": data.task, "device": str(device),
                "threads": torch.get_num_threads(),
                "examples": data.train.take(settings.batch_size * settings.memory_steps)}
    with _memory_context().Pool(1, maxtasksperchild=1) as pool:
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
                     reporter: _Reporter) -> _Latency:
    """Inference time of the base model and of each trained model, as trained and merged (interleaved)."""
    from . import runs
    from .export import restore

    reporter.say("latency: loading the trained models")
    unchanged = MethodSpec(name=methods.base_model_method().name)
    base = prepare_case(settings, unchanged, data.num_labels, data.task, device).model
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
    seconds = _interleaved_latency(variants, batches, device, settings.latency_rounds, reporter)
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


def _interleaved_latency(variants: dict[str, torch.nn.Module], batches: list[dict], device: torch.device,
                         rounds: int, reporter: _Reporter) -> dict[str, float]:
    """Median seconds per inference batch of every variant, measured round-robin (round 0 warms up)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        for round_index in range(rounds + 1):
            reporter.check()
            for name, model in variants.items():
                model.eval()
                for inputs in batches:
                    sync(device)
                    tick = time.perf_counter()
                    model(**inputs)
                    sync(device)
                    if round_index:
                        times[name].append(time.perf_counter() - tick)
            reporter.say(f"latency: round {round_index}/{rounds} done")
    return {name: statistics.median(values) for name, values in times.items()}


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


# --- report ---------------------------------------------------------------------------------------------------------
def display_scale(metric: str) -> int:
    """Scores in [0, 1] (accuracy, F1, Matthews) are shown as points: × 100."""
    return 100 if metric in ("accuracy", "macro_f1", "matthews") else 1


def _score(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    text = f"{100 * value:.1f}" if display_scale(metric) == 100 else f"{value:.4f}"
    return text.replace("-", "−")  # the minus sign, as in the Δ column (a Matthews correlation can be negative)


def score_text(mean: float, std: float | None, count: int, metric: str) -> str:
    text = _score(mean, metric)
    if std is not None:
        text += f" ± {_score(std, metric)}"
    return f"{text} (n={count})"


def _ratio(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}×" if value >= 0.01 else f"{value:.1e}×"  # a 20 KB vector against an 87 MB one


def _number(value: float | None, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if value is not None else "–"


def accuracy_rows(result: BenchResult) -> list[tuple[str, ...]]:
    full = result.reference_case()
    rows = []
    for case in result.cases:
        delta = None if full is None or case is full else case.mean - full.mean
        delta_text = "–" if delta is None else f"{'+' if delta >= 0 else '−'}{_score(abs(delta), result.metric)}"
        rows.append((case.label, case.size_text, f"{case.method_params:,} ({case.trainable_params:,})",
                     score_text(case.mean, case.std, len(case.scores), result.metric), delta_text,
                     case.converged_text))
    return rows


def speed_rows(result: BenchResult) -> list[tuple[str, ...]]:
    rows = []
    for case in result.cases:
        achieved = result.achieved_flops(case)
        rows.append((
            case.label, _number(case.step_time_s, 3), _ratio(result.ratio(case, "step_time_s")),
            _ratio(result.ratio(case, "step_cpu_s")),
            _number(case.peak_memory_mb), _ratio(result.ratio(case, "peak_memory_mb")),
            _number(case.training_memory_mb), _ratio(result.ratio(case, "training_memory_mb")),
            _number(case.flops_per_step / 1e9 if case.flops_per_step else None, 1),
            _number(achieved / 1e9 if achieved else None, 1),
            _number(100 * achieved / result.matmul_peak_flops if achieved else None, 1),
            _ratio(case.latency_ratio),
            _ratio(case.merged_latency_ratio) if case.foldable else "cannot merge",
            format_bytes(case.vector_bytes) if case.vector_bytes is not None else "–",
            _ratio(result.ratio(case, "vector_bytes"))))
    return rows


def curve_rows(result: BenchResult) -> list[tuple[str, ...]]:
    return [(f"{point.d:,}", f"{point.d:,} ({point.trainable_params:,})",
             score_text(point.mean, point.std, len(point.scores), result.metric)) for point in result.curve]


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(row) + " |" for row in rows)]


def markdown(result: BenchResult) -> str:
    settings, machine = result.settings, result.machine
    data = settings["data"]
    metric = result.metric
    seeds, gpu = settings["seeds"], machine["gpu"]
    lines = [
        f"# Methods side by side: {settings['model']['name_or_path']} on {'/'.join(Path(data['train']).parts[-2:])}",
        "",
        f"{result.train_examples:,} training examples (`{data['train']}`), {result.validation_examples:,} validation "
        f"examples ({result.validation_source}); {settings['steps']} steps of batch {settings['batch_size']}"
        + (f" at most, a run stopping after {settings['patience']} evaluations without improvement (every "
           f"{max(1, settings['steps'] // settings['evaluations'])} steps)" if settings.get("patience") else "")
        + f", longest input {data['max_length']} tokens; seeds {', '.join(map(str, seeds))}; pooling "
        f"{settings['model']['pooling']}.",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} CPUs, {machine['torch_threads']} torch "
        f"thread{'' if machine['torch_threads'] == 1 else 's'}, "
        f"{machine['memory_gib']} GiB; device {machine['device']}{f' ({gpu})' if gpu else ''};"
        f" torch {machine['torch']}, Python {machine['python']}. Measured matrix-multiply peak: "
        f"{result.matmul_peak_flops / 1e9:,.1f} GFLOP/s. Wall time {result.wall_time_s / 60:.1f} min.",
        "",
        f"## {metric} on the validation data (mean ± std over seeds; points × 100)",
        "",
        ("converged: 'not converged' where a run's best evaluation was its last (its curve was still rising when its "
         "steps ran out: more steps would score higher); '–' where it was evaluated once, which cannot tell."),
        "",
        *_table([c.format(metric=metric) for c in ACCURACY_COLUMNS], accuracy_rows(result)),
        "",
        "## Speed and size (ratios to full finetuning, measured in the same run)",
        "",
        *_table(SPEED_COLUMNS, speed_rows(result)),
        "",
        "Step time: median of interleaved rounds; CPU s: the process's CPU seconds per step (all threads), which "
        "other programs' load moves less than the wall time. Peak MB: peak resident memory of a fresh process per "
        "method (max allocated on CUDA); training MB: its part above the loaded model and data. GFLOP/s: counted "
        "matrix-product FLOPs of one step ÷ the median step time. Inference: median per validation batch, as "
        "trained and merged into the weights, ÷ the untouched base model.",
    ]
    if result.curve:
        lines += ["", f"## Budget curve: {_curve_title(settings)} {metric} against {curve_method().size_name}", "",
                  *_table([c.format(metric=metric) for c in CURVE_COLUMNS], curve_rows(result)),
                  "", f"![budget curve]({CURVE_PNG})"]
    lines += ["", f"![speed]({SPEED_PNG})"]
    if result.notes:
        lines += ["", "Notes:", *(f"- {note}" for note in result.notes)]
    return "\n".join(lines) + "\n"


def write_results(result: BenchResult, output: Path) -> list[Path]:
    output = Path(output)
    written = [atomic_write_text(output / RESULTS_MD, markdown(result))]
    written += plot_results(result, output)
    written.append(output / RESULTS_JSON)
    return written


def plot_results(result: BenchResult, output: Path) -> list[Path]:
    """The budget curve and the speed ratios as PNGs (matplotlib's Agg canvas: no display, no GUI toolkit)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def save(figure: Figure, name: str) -> Path:
        FigureCanvasAgg(figure)
        return atomic_write(output / name, lambda temp: figure.savefig(temp, format="png", dpi=120,
                                                                        bbox_inches="tight"))

    scale = display_scale(result.metric)
    written = []
    figure = Figure(figsize=(8, 5))
    axes = figure.add_subplot()
    if result.curve:
        xs = [point.d for point in result.curve]
        axes.errorbar(xs, [scale * p.mean for p in result.curve], yerr=[scale * (p.std or 0) for p in result.curve],
                      marker="o", linewidth=2, capsize=3, color="black",
                      label=f"{_curve_title(result.settings)}, {curve_method().size_name} = "
                            f"{', '.join(f'{d:,}' for d in xs)}")
    markers = "sD^v<>pPX*h"
    colors = matplotlib.colormaps["tab20"]  # one colour per case (tab10 would repeat at the eleventh)
    for index, case in enumerate(result.cases):
        y, error = scale * case.mean, scale * (case.std or 0)
        if case.method_params == 0:  # no room on a log axis: a level line
            axes.axhline(y, linestyle="--", color="gray", linewidth=1)
            axes.annotate(case.label, (1, y), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=8)
            continue
        axes.errorbar([case.method_params], [y], yerr=[error], marker=markers[index % len(markers)], linestyle="none",
                      capsize=3, color=colors(index % colors.N), label=f"{case.label} ({case.method_params:,})")
    axes.set_xscale("log")
    axes.set_xlabel("trainable parameters without the head (log scale)")
    axes.set_ylabel(f"{result.metric}{' × 100' if scale == 100 else ''}")
    axes.set_title(f"{result.metric} against trainable parameters")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    written.append(save(figure, CURVE_PNG))

    figure = Figure(figsize=(8, 0.45 * len(result.cases) + 1.5))
    axes = figure.add_subplot()
    labels = [case.label for case in result.cases]
    series = [("step time", "step_time_s"), ("peak memory", "peak_memory_mb"),
              ("training memory", "training_memory_mb")]
    height = 0.8 / len(series)
    for offset, (name, attribute) in enumerate(series):
        values = [result.ratio(case, attribute) or 0 for case in result.cases]
        axes.barh([i + offset * height for i in range(len(labels))], values, height=height, label=name)
    axes.set_yticks([i + height for i in range(len(labels))], labels)
    axes.axvline(1.0, color="gray", linewidth=1)
    axes.invert_yaxis()
    axes.set_xlabel("÷ full finetuning (same run)")
    axes.set_title("Training cost relative to full finetuning")
    axes.legend(fontsize=8)
    written.append(save(figure, SPEED_PNG))
    return written
