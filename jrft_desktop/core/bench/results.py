"""The result types of a bench (a case's scores, speed and memory; the budget curve), its progress reports and its
cancellation."""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .. import methods
from ..errors import UserError

BENCH_FORMAT = "jrft-bench/1"


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


# --- report ---------------------------------------------------------------------------------------------------------
def display_scale(metric: str) -> int:
    """Scores in [0, 1] (accuracy, F1, Matthews) are shown as points: × 100."""
    return 100 if metric in ("accuracy", "macro_f1", "matthews") else 1


def score_cell(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    text = f"{100 * value:.1f}" if display_scale(metric) == 100 else f"{value:.4f}"
    return text.replace("-", "−")  # the minus sign, as in the Δ column (a Matthews correlation can be negative)


def score_text(mean: float, std: float | None, count: int, metric: str) -> str:
    text = score_cell(mean, metric)
    if std is not None:
        text += f" ± {score_cell(std, metric)}"
    return f"{text} (n={count})"


class Reporter:
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
