"""The Results page's privacy check: what a finished run's model gives away about its training data (the audit of
core/audit, through backend.check_privacy), run in the background with progress and a Stop, and its findings: the
reading in plain words and the figures behind it."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from . import dialogs
from .backend import check_privacy, read_audit
from .worker import run_in_background

CHECK_TIP = ("Measure what this model gives away about its training data, without retraining: how well an attacker "
             "tells its training examples from held-out ones by the model's loss, and for a run trained with audit "
             "canaries a lower bound on ε from this one run. Writes audit.json and the privacy report in the run "
             "folder.")
NOT_CHECKED = ("Not checked yet. <i>Check privacy</i> measures how much the model reveals about the examples it "
               "was trained on.")


class _Relay(QObject):
    """Lives in the UI thread: the audit's progress, emitted from its pool thread, is queued back to it."""

    moved = Signal(object)


def figures(audit: dict) -> str:
    """The audit's numbers in one line."""
    parts = [f"membership attack AUC {audit['mia_auc']:.3f}",
             f"true positives at 1 % false positives {100 * audit['mia_tpr_at_1pct_fpr']:.1f} %"]
    if audit.get("epsilon_lower_bound") is not None:
        parts.append(f"ε ≥ {audit['epsilon_lower_bound']:.2f} (one run, 95 %)")
    if audit.get("epsilon") is not None:
        parts.append(f"accountant ε {audit['epsilon']:.2f}")
    if (audit.get("canary_exposure") or {}).get("mean") is not None:
        parts.append(f"canary exposure {audit['canary_exposure']['mean']:.1f} bits")
    if audit.get("train_time_s"):
        parts.append(f"checked in {audit['audit_time_s']:.1f} s (training took {audit['train_time_s']:.0f} s)")
    return " · ".join(parts)


class PrivacyCheckBox(QGroupBox):
    """The privacy check of the run shown: its last findings, and the button that (re)checks it."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Privacy check", parent)
        self.setObjectName("privacyCheck")
        self.run_dir: Path | None = None
        self.audit: dict | None = None
        self.stop_event: threading.Event | None = None  # set while a check runs
        box = QVBoxLayout(self)
        self.reading = QLabel(NOT_CHECKED)
        self.reading.setObjectName("auditReading")
        self.reading.setWordWrap(True)
        self.reading.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.addWidget(self.reading)
        self.figures = QLabel("")
        self.figures.setObjectName("detail")
        self.figures.setWordWrap(True)
        box.addWidget(self.figures)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.hide()
        row.addWidget(self.progress, 1)
        self.button = QPushButton("Check privacy")
        self.button.setToolTip(CHECK_TIP)
        row.addWidget(self.button, 0, Qt.AlignmentFlag.AlignRight)  # its own width, at the right, progress or not
        box.addLayout(row)
        self._relay = _Relay(self)
        self._relay.moved.connect(self._show_progress)
        self.button.clicked.connect(self._clicked)
        self.hide()

    @property
    def busy(self) -> bool:
        return self.stop_event is not None

    def set_run(self, run_dir: Path | None) -> None:
        """The finished run shown (None: none, or one without a model to check), with its earlier findings."""
        if self.stop_event is not None:  # a check of the run shown before: stopped, its answer dropped
            self.stop_event.set()
            self.stop_event = None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.setVisible(self.run_dir is not None)
        self.show_audit(read_audit(self.run_dir) if self.run_dir is not None else None)
        self._show_running(False)

    def show_audit(self, audit: dict | None) -> None:
        self.audit = audit
        self.reading.setText(audit["reading"] if audit is not None else NOT_CHECKED)
        self.figures.setText(figures(audit) if audit is not None else "")
        self.button.setText("Check again" if audit is not None else "Check privacy")

    def check(self) -> None:
        """Audit the run in the background (its progress in the bar); Stop ends it."""
        run_dir, stop = self.run_dir, threading.Event()
        self.stop_event = stop
        self._show_running(True)
        self.progress.setFormat("Loading the trained model…")
        run_in_background(self, check_privacy, run_dir, self._relay.moved.emit, stop,
                          on_result=lambda audit: self._finished(stop, audit),
                          on_error=lambda failure: self._failed(stop, failure))

    def _clicked(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()
            self.button.setEnabled(False)  # until the audit reaches its next check of the stop
        else:
            self.check()

    @Slot(object)
    def _show_progress(self, progress) -> None:
        if self.stop_event is None:
            return
        self.progress.setRange(0, max(1, progress.total))
        self.progress.setValue(progress.done)
        self.progress.setFormat(f"{progress.message}: {progress.done:,} of {progress.total:,} examples")

    def _finished(self, stop: threading.Event, audit: dict) -> None:
        if stop is self.stop_event:  # still the run shown
            self.stop_event = None
            self._show_running(False)
            self.show_audit(audit)

    def _failed(self, stop: threading.Event, failure) -> None:
        if stop is not self.stop_event:
            return
        self.stop_event = None
        self._show_running(False)
        if not stop.is_set():  # a Stop the user asked for needs no dialog
            dialogs.show_failure(self, failure, "check privacy")

    def _show_running(self, running: bool) -> None:
        self.progress.setVisible(running)
        self.progress.setRange(0, 0)  # busy until the first progress arrives
        self.button.setEnabled(True)
        self.button.setText("Stop" if running else ("Check again" if self.audit is not None else "Check privacy"))
