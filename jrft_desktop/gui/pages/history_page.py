"""Page 6: every run in the runs folder; reopen, compare, resume or delete them."""

from __future__ import annotations

import datetime
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.paths import runs_dir
from .. import dialogs
from ..backend import RunSummary, delete_run, list_runs, load_history
from ..plots import CurvePanel
from ..worker import LatestRequest, run_in_background
from .base import Note, Page, thousands

RUN_COLUMNS = ("Date", "Run", "Method", "Data", "Validation metric", "Status", "Trainable", "Steps")
COMPARE_COLUMNS = ("Run", "Method", "Trainable", "Metric", "Steps", "Median step", "Wall time")


def _metric_text(run: RunSummary) -> str:
    return f"{run.metric_name} {run.metric:.4f}" if run.metric is not None else "–"


def _method_text(run: RunSummary) -> str:
    """The method, and for a private run the ε it spent, which sets it apart from the same method trained openly."""
    privacy = run.metrics.get("privacy")
    return f"{run.method}, private ε = {privacy['epsilon_spent']:.2f}" if privacy else run.method


def _fill_row(table: QTableWidget, row: int, values) -> None:
    for column, value in enumerate(values):
        item = QTableWidgetItem(value)
        item.setToolTip(value)
        table.setItem(row, column, item)


class HistoryPage(Page):
    open_requested = Signal(str)
    resume_requested = Signal(str)
    run_deleted = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("History", "Every run in the runs folder. Select one to reopen or resume it; select two or "
                                    "more to compare their curves.", parent=parent)
        self.runs: list[RunSummary] = []
        self.training_dir: Path | None = None  # the run being trained now (it cannot be deleted)

        self.body.addLayout(self._build_buttons())
        self.status = Note()
        self.body.addWidget(self.status)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self._build_runs_table())
        splitter.addWidget(self._build_comparison())
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 2)
        self.comparison.hide()
        self.body.addWidget(splitter, 1)

        self._connect_signals()
        self._lister = LatestRequest(self, list_runs, self._show_runs, self._show_failure)

    def _build_buttons(self) -> QHBoxLayout:
        buttons = QHBoxLayout()
        self.open_button = QPushButton("Open")
        self.compare_button = QPushButton("Compare")
        self.resume_button = QPushButton("Resume")
        self.delete_button = QPushButton("Delete…")
        self.refresh_button = QPushButton("Refresh")
        self.folder_button = QPushButton("Open the runs folder")
        for button in (self.open_button, self.compare_button, self.resume_button, self.delete_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.refresh_button)
        buttons.addWidget(self.folder_button)
        return buttons

    def _build_runs_table(self) -> QTableWidget:
        """A row per run; several can be selected (to compare them)."""
        self.table = QTableWidget(0, len(RUN_COLUMNS))
        self.table.setObjectName("runs")
        self.table.setHorizontalHeaderLabels(RUN_COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        # about four runs stay in view while a comparison fills the rest of the page
        self.table.setMinimumHeight(header.sizeHint().height() + 4 * self.table.verticalHeader().defaultSectionSize()
                                    + 2 * self.table.frameWidth())
        return self.table

    def _build_comparison(self) -> QGroupBox:
        """The selected runs side by side, and their curves (shown once two or more are compared)."""
        self.comparison = QGroupBox("Comparison")
        box = QVBoxLayout(self.comparison)
        self.compare_table = QTableWidget(0, len(COMPARE_COLUMNS))
        self.compare_table.setObjectName("comparison")
        self.compare_table.setHorizontalHeaderLabels(COMPARE_COLUMNS)
        self.compare_table.verticalHeader().hide()
        self.compare_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.compare_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.compare_table.horizontalHeader().setStretchLastSection(True)
        self.compare_table.verticalHeader().setDefaultSectionSize(24)
        self.compare_table.setToolTip("Each run's colour in the plots below.")
        box.addWidget(self.compare_table)
        self.compare_plots = CurvePanel(("loss", "metric"), columns=2)
        box.addWidget(self.compare_plots, 1)
        return self.comparison

    def _connect_signals(self) -> None:
        self.open_button.clicked.connect(self._open_selected)
        self.compare_button.clicked.connect(self.compare_selected)
        self.resume_button.clicked.connect(self._resume_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.refresh_button.clicked.connect(self.refresh)
        self.folder_button.clicked.connect(self.open_runs_folder)
        self.table.itemSelectionChanged.connect(self._show_buttons)
        self.table.doubleClicked.connect(self._open_selected)

    @property
    def busy(self) -> bool:
        return self._lister.busy

    def refresh(self) -> None:
        """Read the runs folder again (in the background)."""
        self._lister.request()

    def _show_runs(self, runs: list[RunSummary]) -> None:
        selected = {run.path for run in self.selected_runs()}
        self.runs = runs
        self.table.setRowCount(len(self.runs))
        for row, run in enumerate(self.runs):
            date = datetime.datetime.fromtimestamp(run.created).strftime("%Y-%m-%d %H:%M")
            _fill_row(self.table, row, (date, run.name, _method_text(run), run.data, _metric_text(run), run.status,
                                        thousands(run.trainable_params), run.steps))
            if run.path in selected:
                self.table.selectRow(row)
        self.status.show_text("" if self.runs else f"No runs yet in {runs_dir()}.")
        self._show_buttons()

    def _show_failure(self, failure) -> None:
        self.status.show_text(f"Cannot read the runs folder: {failure.message}", "error")

    def selected_runs(self) -> list[RunSummary]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [self.runs[row] for row in rows if row < len(self.runs)]

    def select(self, names: list[str]) -> None:
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row, run in enumerate(self.runs):
            if run.name in names:
                self.table.selectRow(row)
        self.table.setSelectionMode(mode)

    def compare_selected(self) -> None:
        """Overlay the selected runs' curves and list them side by side."""
        runs = self.selected_runs()
        run_in_background(self, lambda: [load_history(run.path) for run in runs],
                          on_result=lambda histories: self._show_comparison(runs, histories),
                          on_error=self._show_failure)

    def _show_comparison(self, runs: list[RunSummary], histories: list[list[dict]]) -> None:
        self.compare_plots.clear()
        self.compare_table.setRowCount(len(runs))
        metric_names = {run.metric_name for run in runs if run.metric_name}
        shared_metric = metric_names.pop() if len(metric_names) == 1 else None
        for row, (run, history) in enumerate(zip(runs, histories)):
            metrics = run.metrics
            step_time = metrics.get("step_time_s")
            wall = metrics.get("wall_time_s")
            _fill_row(self.compare_table, row, (
                run.name, _method_text(run), thousands(run.trainable_params), _metric_text(run), run.steps,
                f"{step_time:.3f} s" if step_time else "–", f"{wall:,.0f} s" if wall else "–"))
            self.compare_plots.set_history(run.name, history, shared_metric or run.metric_name)
            swatch = QPixmap(12, 12)
            swatch.fill(QColor(self.compare_plots.color(run.name)))
            self.compare_table.item(row, 0).setIcon(QIcon(swatch))
        rows_height = sum(self.compare_table.rowHeight(row) for row in range(len(runs)))
        self.compare_table.setFixedHeight(min(rows_height, 6 * 24) + self.compare_table.horizontalHeader().height() + 4)
        if len(metric_names) > 1:
            self.status.show_text("These runs use different validation metrics; the metric plot mixes them.",
                                  "warning")
        self.comparison.show()

    def delete_selected(self) -> None:
        runs = self.selected_runs()
        if not runs:
            return
        names = ", ".join(run.name for run in runs)
        if not dialogs.confirm(self, "Delete runs", f"Delete {len(runs)} run(s) and all their files?\n\n{names}"):
            return
        if self.training_dir is not None and any(run.path == self.training_dir for run in runs):
            dialogs.show_error(self, "One of these runs is training right now; cancel it first.",
                               title="Cannot delete")
            return
        self.comparison.hide()
        for run in runs:
            run_in_background(self, delete_run, run.path,
                              on_result=lambda _, path=str(run.path): self._deleted(path),
                              on_error=lambda failure: dialogs.show_failure(self, failure, "delete the run"))

    def _deleted(self, path: str) -> None:
        self.run_deleted.emit(path)
        self.refresh()

    def _open_selected(self) -> None:
        runs = self.selected_runs()
        if runs:
            self.open_requested.emit(str(runs[0].path))

    def _resume_selected(self) -> None:
        runs = self.selected_runs()
        if runs and runs[0].resumable:
            self.resume_requested.emit(str(runs[0].path))

    def open_runs_folder(self) -> None:
        runs_dir().mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(runs_dir())))

    def _show_buttons(self) -> None:
        runs = self.selected_runs()
        self.open_button.setEnabled(len(runs) == 1)
        self.compare_button.setEnabled(len(runs) >= 2)
        self.resume_button.setEnabled(len(runs) == 1 and runs[0].resumable and self.training_dir is None)
        self.delete_button.setEnabled(bool(runs))
