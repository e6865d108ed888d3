"""A bench result as Markdown tables (accuracy, speed, the budget curve) and results.json / results.md."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ..formatting import format_bytes
from ..paths import atomic_write_text
from .cases import curve_method, curve_title
from .plots import CURVE_PNG, SPEED_PNG, plot_results
from .results import BenchResult, score_cell, score_text

RESULTS_JSON = "results.json"


RESULTS_MD = "results.md"


ACCURACY_COLUMNS = ("method", "size", "trainable (with head)", "{metric}", "Δ vs full", "converged")


SPEED_COLUMNS = ("method", "step s", "step ÷ full", "CPU s ÷ full", "peak MB", "memory ÷ full", "training MB",
                 "training ÷ full", "GFLOP / step", "GFLOP/s", "% of matmul peak", "inference ÷ base", "merged ÷ base",
                 "vector", "vector ÷ full")


CURVE_COLUMNS = ("d", "trainable (with head)", "{metric}")


def json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


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
        delta_text = "–" if delta is None else f"{'+' if delta >= 0 else '−'}{score_cell(abs(delta), result.metric)}"
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
        lines += ["", f"## Budget curve: {curve_title(settings)} {metric} against {curve_method().size_name}", "",
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
