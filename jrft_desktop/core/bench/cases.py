"""What a bench compares: its cases (a method at a size, from each method's declared bench cases), the budget
curve, and the settings of `jrft bench`, its quick form and the app's Compare page."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import methods
from ..config import DataSpec, MethodSpec, ModelSpec
from ..errors import UserError
from ..paths import data_root, sample_data_dir

DEFAULT_BUDGET = 5000


DEFAULT_CURVE = (64, 256, 1024, 4096)


# The Compare page: each method trains until its validation metric stops improving (PATIENCE evaluations without a
# better one), at most COMPARE_STEPS steps, evaluated COMPARE_EVALUATIONS times; a run whose best evaluation was its
# last is marked "not converged" (its score was still rising).
COMPARE_STEPS = 300


COMPARE_EVALUATIONS = 10


COMPARE_PATIENCE = 2


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


def curve_title(settings: dict) -> str:
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
