"""Training curves with pyqtgraph: live during a run, reloaded from history.json, or overlaid to compare runs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QGraphicsItem, QGridLayout, QWidget

from ..core.events import EvalEvent, StepEvent

SERIES_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
CASE_SYMBOLS = ("s", "d", "t", "p", "h", "star", "t1", "t2", "t3", "x", "+")
SMOOTHING = 0.8  # weight of the past in the smoothed loss (an exponential moving average)
REFRESH_MS = 250  # redraw at most this often: a fast method reports hundreds of steps a second


@dataclass(frozen=True)
class PlotKind:
    title: str
    unit: str


PLOT_KINDS = {
    "loss": PlotKind("Training loss", "loss"),
    "metric": PlotKind("Validation metric", "score"),
    "lr": PlotKind("Learning rate", "rate"),
    "throughput": PlotKind("Throughput", "examples / s"),
    "epsilon": PlotKind("Privacy spent ε", "ε"),
}
LIVE_PLOTS = ("loss", "metric", "lr", "throughput", "epsilon")  # ε: shown for private runs (show_kind)
HISTORY_PLOTS = ("loss", "metric", "lr")  # history.json records no throughput
THEME_COLORS = {"light": ("#ffffff", "#303030"), "dark": ("#202124", "#d8d8d8")}


def smoothed(values: Sequence[float]) -> list[float]:
    out, average = [], None
    for value in values:
        average = value if average is None else SMOOTHING * average + (1 - SMOOTHING) * value
        out.append(average)
    return out


class CurvePanel(QWidget):
    """A grid of plots; each series (a run) is one color in every plot.

    A `live` panel redraws while a run trains, on the UI thread: it draws without antialiasing or a grid and
    decimates long curves, which keeps each redraw to a few milliseconds."""

    def __init__(self, kinds: Sequence[str] = LIVE_PLOTS, columns: int = 2, live: bool = False,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.kinds = tuple(kinds)
        self.live = live
        self.columns = columns
        self._points: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
        self._items: dict[tuple[str, str], list[pg.PlotDataItem]] = {}
        self._metric_name: str | None = None
        self._ceilings: dict[str, list] = {}
        self._theme = "light"
        self._refresh = QTimer(self)
        self._refresh.setSingleShot(True)
        self._refresh.setInterval(REFRESH_MS)
        self._refresh.timeout.connect(self._redraw)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.plots: dict[str, pg.PlotWidget] = {}
        for kind in self.kinds:
            plot = pg.PlotWidget(self)
            plot.setObjectName(f"plot_{kind}")
            plot.setMinimumHeight(160)
            if live:
                plot.setClipToView(True)
                plot.setDownsampling(auto=True, mode="peak")
            else:
                plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setMouseEnabled(x=True, y=False)
            plot.getPlotItem().setMenuEnabled(False)
            for name in ("left", "bottom"):
                axis = plot.getAxis(name)
                axis.enableAutoSIPrefix(False)  # 0.03, not "30 (x0.001)"
                axis.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)  # repaint on range changes only
            self.plots[kind] = plot
        self._arrange()
        self.apply_theme("light")

    # --- data ---------------------------------------------------------------------------------------------
    def clear(self) -> None:
        self._points.clear()
        for plot in self.plots.values():
            plot.clear()
            plot.enableAutoRange(x=True)
        self._items.clear()
        self._ceilings.clear()
        self._metric_name = None
        self._label_axes()

    def set_step_range(self, total_steps: int) -> None:
        """Fix the step axis to the whole run, so it stays put (and need not be redrawn) as points arrive."""
        for plot in self.plots.values():
            plot.setXRange(0, total_steps, padding=0.02)

    def add_step(self, series: str, event: StepEvent) -> None:
        self._append(series, "loss", event.step, event.loss)
        self._append(series, "lr", event.step, event.lr)
        self._append(series, "throughput", event.step, event.examples_per_s)
        if event.epsilon is not None:
            self._append(series, "epsilon", event.step, event.epsilon)
        self._schedule_redraw()

    def show_kind(self, kind: str, shown: bool) -> None:
        if kind in self.plots:
            self.plots[kind].setVisible(shown)
            self._arrange()

    def _arrange(self) -> None:
        """Lay the shown plots out row by row in at most two rows: five plots (a private run's ε besides the four
        live ones) take three columns rather than a third row, which would make the page too tall for the window."""
        shown = [plot for plot in self.plots.values() if not plot.isHidden()]
        columns = max(self.columns, math.ceil(len(shown) / 2))
        layout = self.layout()
        for plot in self.plots.values():
            layout.removeWidget(plot)
        for index, plot in enumerate(shown):
            layout.addWidget(plot, index // columns, index % columns)

    def set_ceiling(self, kind: str, value: float | None) -> None:
        """A dashed horizontal line at `value` (the privacy budget ε on the ε plot); None removes it."""
        plot = self.plots.get(kind)
        if plot is None:
            return
        for line in self._ceilings.pop(kind, []):
            plot.removeItem(line)
        if value is not None:
            pen = pg.mkPen(THEME_COLORS[self._theme][1], width=1, style=Qt.PenStyle.DashLine)
            self._ceilings[kind] = [plot.addLine(y=value, pen=pen)]

    def add_eval(self, series: str, event: EvalEvent) -> None:
        self._set_metric_name(event.metric_name)
        self._append(series, "metric", event.step, event.metrics[event.metric_name])
        self._schedule_redraw()

    def set_history(self, series: str, history: Sequence[Mapping], metric_name: str | None) -> None:
        """Show one run's history.json entries (steps with loss and lr, evaluations with metrics). Without
        `metric_name`, the first metric of the evaluations: the default one (accuracy, or pearson)."""
        metric_name = metric_name or next((next(iter(entry["eval"])) for entry in history if "eval" in entry), None)
        if metric_name:
            self._set_metric_name(metric_name)
        for entry in history:
            if "eval" in entry:
                if self._metric_name in entry["eval"]:
                    self._append(series, "metric", entry["step"], entry["eval"][self._metric_name])
            else:
                self._append(series, "loss", entry["step"], entry["loss"])
                self._append(series, "lr", entry["step"], entry["lr"])
                if "epsilon" in entry:
                    self._append(series, "epsilon", entry["step"], entry["epsilon"])
        self._redraw()

    def point_count(self, kind: str) -> int:
        return sum(len(points[kind][0]) for points in self._points.values() if kind in points)

    def series_names(self) -> list[str]:
        return list(self._points)

    # --- drawing ------------------------------------------------------------------------------------------
    def apply_theme(self, theme: str) -> None:
        self._theme = theme
        background, foreground = THEME_COLORS[theme]
        for plot in self.plots.values():
            plot.setBackground(background)
            for name in ("left", "bottom"):
                axis = plot.getAxis(name)
                axis.setPen(foreground)
                axis.setTextPen(foreground)
        self._label_axes()

    def _label_axes(self) -> None:
        foreground = THEME_COLORS[self._theme][1]
        for kind, plot in self.plots.items():
            spec = PLOT_KINDS[kind]
            title = f"Validation {self._metric_name}" if kind == "metric" and self._metric_name else spec.title
            plot.setTitle(title, color=foreground, size="11pt")
            plot.setLabel("bottom", "step", color=foreground)
            plot.setLabel("left", self._metric_name if kind == "metric" and self._metric_name else spec.unit,
                          color=foreground)

    def _set_metric_name(self, name: str) -> None:
        if name != self._metric_name:
            self._metric_name = name
            self._label_axes()

    def _append(self, series: str, kind: str, x: float, y: float) -> None:
        if kind not in self.plots:
            return
        xs, ys = self._points.setdefault(series, {}).setdefault(kind, ([], []))
        xs.append(x)
        ys.append(y)

    def color(self, series: str) -> str:
        """The colour of a series in every plot (pages that compare runs show it next to the run)."""
        return SERIES_COLORS[list(self._points).index(series) % len(SERIES_COLORS)]

    def _schedule_redraw(self) -> None:
        if not self._refresh.isActive():
            self._refresh.start()

    def _redraw(self) -> None:
        for series, kinds in self._points.items():
            color = self.color(series)
            for kind, (xs, ys) in kinds.items():
                items = self._items.get((series, kind)) or self._create_items(series, kind, color)
                if kind == "loss":
                    items[0].setData(xs, ys)
                    items[1].setData(xs, smoothed(ys))
                else:
                    items[0].setData(xs, ys)

    def _create_items(self, series: str, kind: str, color: str) -> list[pg.PlotDataItem]:
        plot = self.plots[kind]
        smooth = not self.live
        if kind == "loss":  # the noisy per-step loss faintly, its moving average boldly
            faint = pg.mkColor(color)
            faint.setAlpha(70)
            items = [plot.plot(pen=pg.mkPen(faint, width=1), antialias=smooth),
                     plot.plot(pen=pg.mkPen(color, width=2.5), antialias=smooth)]
        elif kind == "metric":
            items = [plot.plot(pen=pg.mkPen(color, width=2), symbol="o", symbolSize=7, symbolBrush=color,
                               symbolPen=None, antialias=smooth)]
        else:
            items = [plot.plot(pen=pg.mkPen(color, width=2), antialias=smooth)]
        self._items[(series, kind)] = items
        return items


class BudgetCurvePlot(pg.PlotWidget):
    """A bench's metric against trainable parameters on a log axis: SLaSh's sweep over d as a line, every
    compared method as a labelled point (a method that trains no parameters besides the head as a level line)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("budgetCurve")
        self.setMinimumHeight(260)
        self.showGrid(x=True, y=True, alpha=0.25)
        self.setLogMode(x=True, y=False)
        self.getPlotItem().setMenuEnabled(False)
        self.getAxis("left").enableAutoSIPrefix(False)
        self.legend = self.addLegend(offset=(-10, 10))
        self.point_count = 0
        self.apply_theme("light")

    def apply_theme(self, theme: str) -> None:
        background, foreground = THEME_COLORS[theme]
        self.setBackground(background)
        for name in ("left", "bottom"):
            axis = self.getAxis(name)
            axis.setPen(foreground)
            axis.setTextPen(foreground)
        self.setLabel("bottom", "trainable parameters without the head (log scale)", color=foreground)
        self.legend.setLabelTextColor(foreground)  # pyqtgraph's own grey is faint on white
        for _, label in self.legend.items:
            label.setText(label.text)  # redrawn in the new colour

    def show_result(self, result, scale: float) -> None:
        """Draw a bench result (core.bench.BenchResult); scores are multiplied by `scale` (100 for points)."""
        self.clear()
        self.legend.clear()
        self.point_count = 0
        self.setLabel("left", f"{result.metric}{' × 100' if scale == 100 else ''}")
        if result.curve:
            self.plot([p.d for p in result.curve], [scale * p.mean for p in result.curve],
                      pen=pg.mkPen(SERIES_COLORS[0], width=2.5), symbol="o", symbolBrush=SERIES_COLORS[0],
                      symbolPen=None, name=f"SLaSh, d = {', '.join(f'{p.d:,}' for p in result.curve)}")
            self.point_count += len(result.curve)
        case_colors = SERIES_COLORS[1:]  # the first is the curve's
        for index, case in enumerate(result.cases):
            color = case_colors[index % len(case_colors)]
            if case.method_params == 0:
                self.addItem(pg.InfiniteLine(scale * case.mean, angle=0, label=case.label,
                                             pen=pg.mkPen(color, width=1.5, style=Qt.PenStyle.DashLine),
                                             labelOpts={"position": 0.95, "color": color}))
            else:
                self.plot([case.method_params], [scale * case.mean], pen=None, symbolSize=9,
                          symbol=CASE_SYMBOLS[index % len(CASE_SYMBOLS)],  # with the colour, tells 11 cases apart
                          symbolBrush=color, symbolPen=None, name=f"{case.label} ({case.method_params:,})")
            self.point_count += 1
