"""A bench result as PNG plots, drawn with matplotlib's Agg canvas (the core never imports a GUI toolkit)."""

from __future__ import annotations

from pathlib import Path

from ..paths import atomic_write
from .cases import curve_method, curve_title
from .results import BenchResult, display_scale

CURVE_PNG = "budget_curve.png"


SPEED_PNG = "speed.png"


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
                      label=f"{curve_title(result.settings)}, {curve_method().size_name} = "
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
