"""Compare: a quick side-by-side of methods on the chosen model and data (core.bench, in the background), shown
as a table and a budget curve. The same measurements as `jrft bench --quick`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ...core.config import RunConfig
from ..backend import BenchChoices, ComparisonRequest, bench_choices, comparison_table, run_comparison
from ..plots import BudgetCurvePlot
from ..worker import run_in_background
from .base import Note, Page, compact_form

CHOICE_COLUMNS = 4


class _ProgressRelay(QObject):
    """Lives in the UI thread: the bench reports from its background thread through this queued signal."""

    progress = Signal(object)


def parse_curve(text: str) -> tuple[int, ...]:
    """'64 256, 1024' -> (64, 256, 1024); ValueError with a message for anything else."""
    parts = text.replace(",", " ").split()
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError("the budget curve takes positive whole numbers (values of d), separated by spaces.")
    return tuple(sorted({int(part) for part in parts}))


class ComparePage(Page):
    def __init__(self, prepare: Callable[[], tuple[RunConfig, str]], parent: QWidget | None = None):
        """`prepare()` gives the model, data and training settings chosen on the other pages (see TrainPage)."""
        super().__init__("Compare methods", "Train the chosen methods side by side on your model and data for a few "
                                            "steps each, and compare their validation metric, trainable parameters, "
                                            "speed, memory and file size, and SLaSh at several sizes.",
                         parent=parent)
        self.prepare = prepare
        self.choices: BenchChoices | None = None
        self.method_boxes: dict[str, QCheckBox] = {}
        self.result = None
        self.output: Path | None = None
        self._stop: threading.Event | None = None
        self._relay = _ProgressRelay(self)
        self._relay.progress.connect(self._show_progress)

        self.body.addWidget(self._build_settings_group())
        self.body.addLayout(self._build_buttons())
        self.status = Note("Loading the methods…")
        self.body.addWidget(self.status)
        self.body.addWidget(self._build_results_splitter(), 1)

        self.run_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.folder_button.clicked.connect(self.open_folder)

    def _build_settings_group(self) -> QGroupBox:
        """The methods to compare (their boxes follow once they load), the budget, the steps and the curve."""
        settings = QGroupBox("What to compare")
        columns = QHBoxLayout(settings)
        self.method_grid = QGridLayout()
        columns.addLayout(self.method_grid, 2)
        form = compact_form()
        self.budget_spin = QSpinBox()
        self.budget_spin.setRange(1, 10_000_000)
        self.budget_spin.setToolTip("Trainable parameters (without the head) for every method with a size: d for "
                                    "SLaSh and JR-WARP, the rank for LoRA and VeRA, the prompt count for WARP.")
        form.addRow("Budget", self.budget_spin)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100_000)
        self.steps_spin.setToolTip("The most training steps per method: each trains until its validation metric "
                                   "stops improving, and one still improving when these run out is marked \"not "
                                   "converged\" (batch size, input length and device come from the Method page).")
        form.addRow("At most, steps each", self.steps_spin)
        self.curve_edit = QLineEdit()
        self.curve_edit.setToolTip("Values of d for SLaSh's budget curve, separated by spaces (empty: no curve).")
        form.addRow("SLaSh d values", self.curve_edit)
        self.memory_box = QCheckBox("Measure peak memory (a fresh process per method)")
        self.memory_box.setChecked(True)
        form.addRow(self.memory_box)
        columns.addLayout(form, 1)
        return settings

    def _build_buttons(self) -> QHBoxLayout:
        """Compare, Stop, the results folder, and the progress across the methods."""
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Compare")
        self.run_button.setObjectName("primary")
        self.run_button.setEnabled(False)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.folder_button = QPushButton("Open the results folder")
        self.folder_button.setEnabled(False)
        for button in (self.run_button, self.stop_button, self.folder_button):
            buttons.addWidget(button)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m")
        buttons.addWidget(self.progress, 1)
        return buttons

    def _build_results_splitter(self) -> QSplitter:
        """The comparison table over the budget curve."""
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableWidget(0, 0)
        self.table.setObjectName("comparison")
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.splitter.addWidget(self.table)
        self.curve_plot = BudgetCurvePlot()
        self.splitter.addWidget(self.curve_plot)
        self.splitter.setStretchFactor(1, 1)  # the plot takes what the window gains or loses; the table keeps its rows
        return self.splitter

    def load(self) -> None:
        run_in_background(self, bench_choices, on_result=self._show_choices,
                          on_error=lambda failure: self.status.show_text(failure.message, "error"))

    def _show_choices(self, choices: BenchChoices) -> None:
        self.choices = choices
        for index, label in enumerate(choices.labels):
            box = QCheckBox(label)
            box.setChecked(label in choices.quick_labels)
            self.method_grid.addWidget(box, index // CHOICE_COLUMNS, index % CHOICE_COLUMNS)
            self.method_boxes[label] = box
        self.budget_spin.setValue(choices.default_budget)
        self.steps_spin.setValue(choices.default_steps)
        self.curve_edit.setText(" ".join(str(d) for d in choices.default_curve))
        self.status.show_text("")
        self.run_button.setEnabled(True)

    # --- running --------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._stop is not None

    def choose(self, labels: tuple[str, ...]) -> None:
        for label, box in self.method_boxes.items():
            box.setChecked(label in labels)

    def start(self) -> None:
        try:
            config, _ = self.prepare()
            curve = parse_curve(self.curve_edit.text())
        except ValueError as error:
            self.status.show_text(f"Cannot compare yet: {error}", "error")
            return
        labels = tuple(label for label, box in self.method_boxes.items() if box.isChecked())
        if not labels:
            self.status.show_text("Choose at least one method to compare.", "error")
            return
        request = ComparisonRequest(config, labels, self.budget_spin.value(), self.steps_spin.value(), curve,
                                    self.memory_box.isChecked())
        self._stop = threading.Event()
        self._set_running(True)
        self.status.show_text(f"Comparing {len(labels)} methods on {Path(config.data.train).name}…")
        run_in_background(self, run_comparison, request, self._relay.progress.emit, self._stop,
                          on_result=self._show_result, on_error=self._show_failure)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self.status.show_text("Stopping after the current step…")

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        for box in self.method_boxes.values():
            box.setEnabled(not running)

    def _show_progress(self, event) -> None:
        self.progress.setMaximum(event.total)
        self.progress.setValue(event.done)
        self.status.show_text(event.message)

    def _show_failure(self, failure) -> None:
        self._stop = None
        self._set_running(False)
        self.status.show_text(failure.message, "warning" if failure.user_error else "error")

    def _show_result(self, result) -> None:
        self._stop = None
        self._set_running(False)
        self.result = result
        self.output = Path(result.output)
        self.folder_button.setEnabled(True)
        table = comparison_table(result)
        self.table.clear()
        self.table.setColumnCount(len(table.headers))
        self.table.setHorizontalHeaderLabels(list(table.headers))
        self.table.setRowCount(len(table.rows))
        for row, values in enumerate(table.rows):
            for column, value in enumerate(values):
                self.table.setItem(row, column, QTableWidgetItem(value))
        self.curve_plot.show_result(result, table.scale)
        rising = [case.label for case in result.cases if case.not_converged]
        warning = (f" Not converged (still improving when their steps ran out, so their scores understate them): "
                   f"{', '.join(rising)}." if rising else "")
        self.status.show_text(f"Done in {result.wall_time_s / 60:.1f} min; results.md, results.json and the plots are "
                              f"in {self.output}.{warning}", "warning" if rising else "info")
        self._show_every_row()

    def _show_every_row(self) -> None:
        """Give the table the height of all its rows (and its scroll bar: there are many columns); the plot below
        gives way down to its minimum height."""
        table = self.table
        height = (table.horizontalHeader().height() + table.verticalHeader().length() + 2 * table.frameWidth()
                  + table.horizontalScrollBar().sizeHint().height())
        self.splitter.setSizes([height, max(0, sum(self.splitter.sizes()) - height)])

    def open_folder(self) -> None:
        if self.output is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.output)))
