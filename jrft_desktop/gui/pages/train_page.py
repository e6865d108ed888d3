"""Page 4: start, pause, resume and cancel a run, and watch it: progress with ETA, live curves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...core.config import RunConfig
from ...core.errors import UserError
from ...core.events import EvalEvent, FailedEvent, FinishedEvent, PreparedEvent, StepEvent
from ...core.formatting import format_duration
from ...core.paths import new_run_dir
from .. import dialogs
from ..backend import load_history, measure_run, samples_by_step
from ..chat import SamplesView
from ..lag_probe import LagProbe
from ..plots import LIVE_PLOTS, CurvePanel
from ..worker import TrainingRun, run_in_background
from .base import Note, Page, thousands

START_DELAY_MS = 50


class TrainPage(Page):
    run_ended = Signal(object)  # the FinishedEvent or FailedEvent of each run
    running_changed = Signal(bool)
    results_requested = Signal(str)  # the run folder to show on the Results page

    def __init__(self, prepare: Callable[[], tuple[RunConfig, str]], parent: QWidget | None = None):
        """`prepare()` returns the configuration to train and a one-line description, or raises ValueError
        saying what is missing."""
        super().__init__("Train", "Training runs in the background: you can keep using the app. Pause waits after "
                                  "the current step; Cancel saves a checkpoint you can resume later from History.",
                         parent=parent)
        self.prepare = prepare
        self.run: TrainingRun | None = None
        self.last_run_dir: Path | None = None
        self.total_steps = 0
        self.probe = LagProbe(parent=self)
        self.max_lag_ms: float | None = None  # the longest the UI thread was blocked during the last run

        self.body.addWidget(self._build_run_group())
        self.body.addLayout(self._build_watched_row(), 1)
        self._connect_signals()
        self._show_buttons()

    def _build_run_group(self) -> QGroupBox:
        """What will train, the buttons, the progress with its ETA, and the run's state and notes."""
        top = QGroupBox("Run")
        grid = QGridLayout(top)
        self.plan_label = QLabel("")
        self.plan_label.setObjectName("runPlan")
        self.plan_label.setWordWrap(True)
        grid.addWidget(self.plan_label, 0, 0, 1, 2)
        grid.addLayout(self._build_buttons(), 1, 0, 1, 2)
        self.progress = QProgressBar()
        self.progress.setFormat("")
        grid.addWidget(self.progress, 2, 0)
        self.eta_label = QLabel("")
        self.eta_label.setObjectName("eta")
        self.eta_label.setMinimumWidth(180)
        grid.addWidget(self.eta_label, 2, 1)
        self.state_label = QLabel("Ready.")
        self.state_label.setObjectName("trainState")
        self.state_label.setWordWrap(True)
        grid.addWidget(self.state_label, 3, 0, 1, 2)
        self.notes = Note()
        grid.addWidget(self.notes, 4, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        return top

    def _build_buttons(self) -> QHBoxLayout:
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("primary")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current step and save a checkpoint; resume it later from "
                                      "History.")
        self.measure_button = QPushButton("Measure a step")
        self.measure_button.setToolTip("Before you start: train three steps of a throwaway copy on your data, to see "
                                       "how long a step takes and how long the run will be (nothing is saved).")
        self.resume_button = QPushButton("Resume this run")
        self.results_button = QPushButton("See the results →")
        for button in (self.start_button, self.measure_button, self.pause_button, self.cancel_button,
                       self.resume_button, self.results_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        return buttons

    def _build_watched_row(self) -> QHBoxLayout:
        """The live curves, and beside them a generate run's answers at each evaluation."""
        self.plots = CurvePanel(LIVE_PLOTS, live=True)
        self.plots.show_kind("epsilon", False)  # until a private run starts
        watched = QHBoxLayout()
        watched.addWidget(self.plots, 3)
        self.samples_box = QGroupBox("Answers to validation prompts, at each evaluation (default decoding)")
        self.samples_box.setToolTip("A generate run answers its first validation prompts at every evaluation, so you "
                                    "see the answers change as training goes; they are kept in the run's "
                                    "history.json and on the Results page.")
        box = QVBoxLayout(self.samples_box)
        self.samples = SamplesView()
        box.addWidget(self.samples)
        self.samples_box.hide()  # until an evaluation answers prompts
        watched.addWidget(self.samples_box, 2)
        return watched

    def _connect_signals(self) -> None:
        self.start_button.clicked.connect(self.start)
        self.measure_button.clicked.connect(self.measure)
        self.pause_button.toggled.connect(self._pause_toggled)
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button.clicked.connect(lambda: self.resume(self.last_run_dir))
        self.results_button.clicked.connect(lambda: self.results_requested.emit(str(self.last_run_dir)))

    @property
    def running(self) -> bool:
        return self.run is not None

    def refresh_plan(self) -> None:
        """Describe what Start will train (or what is still missing)."""
        if self.running:
            return
        try:
            _, description = self.prepare()
        except ValueError as problem:
            self.plan_label.setText(f"<b>Not ready:</b> {problem}")
            self.start_button.setEnabled(False)
            self.measure_button.setEnabled(False)
        else:
            self.plan_label.setText(f"Ready to train: {description}")
            self.start_button.setEnabled(True)
            self.measure_button.setEnabled(True)

    def measure(self) -> None:
        """Time a few real steps of the run Start would train, in the background."""
        try:
            config, _ = self.prepare()
        except ValueError as problem:
            dialogs.show_error(self, str(problem), title="Not ready to measure")
            return
        self.measure_button.setEnabled(False)
        self.state_label.setText("Measuring a few steps on your data (a throwaway copy of the model)…")

        def measured(estimate) -> None:
            self.measure_button.setEnabled(True)
            steps = config.training.max_steps
            whole = f"; {steps:,} steps take about {format_duration(steps * estimate.step_s)}" if steps else ""
            self.state_label.setText(f"Measured: {estimate.describe()}{whole}.")

        def failed(failure) -> None:
            self.measure_button.setEnabled(True)
            self.state_label.setText(f"Could not measure: {failure.message}")

        run_in_background(self, measure_run, config, on_result=measured, on_error=failed)

    # --- controls -----------------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            config, description = self.prepare()
        except ValueError as problem:
            dialogs.show_error(self, str(problem), title="Not ready to train")
            return
        try:
            run_dir = new_run_dir(config.method.name)
        except UserError as problem:  # e.g. a read-only or full runs folder
            dialogs.show_error(self, str(problem), title="Cannot train")
            return
        self._launch(TrainingRun(config, run_dir, parent=self), description)

    def resume(self, run_dir: Path | str) -> None:
        """Continue a stopped run from its checkpoint."""
        if self.running:
            dialogs.show_error(self, "A run is already training; wait for it or cancel it first.",
                               title="Cannot resume now")
            return
        run_dir = Path(run_dir)
        self._launch(TrainingRun(None, run_dir, resume=True, parent=self), f"Resuming the stopped run {run_dir.name}.")
        run_in_background(self, load_history, run_dir, on_result=lambda history: self._show_history(run_dir, history))

    def _show_history(self, run_dir: Path, history) -> None:
        """A resumed run's curves and samples so far (history.json)."""
        self.plots.set_history(run_dir.name, history, None)
        samples = samples_by_step(history)
        if samples:
            self.samples.set_samples(samples)
            self.samples_box.show()

    def set_paused(self, paused: bool) -> None:
        self.pause_button.setChecked(paused)

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()
            self.pause_button.setChecked(False)
            self.state_label.setText("Stopping after this step and saving a checkpoint…")
            self.cancel_button.setEnabled(False)

    def _pause_toggled(self, paused: bool) -> None:
        if self.run is None:
            return
        self.run.set_paused(paused)
        self.pause_button.setText("Resume" if paused else "Pause")
        self.state_label.setText("Paused: training waits before the next step." if paused else "Training…")

    # --- the run ------------------------------------------------------------------------------------------
    def _launch(self, run: TrainingRun, description: str) -> None:
        self.run = run
        self.last_run_dir = run.run_dir
        self.plots.clear()
        self.samples.clear_samples()
        self.samples_box.hide()
        self.progress.setRange(0, 0)  # busy until the trainer knows its steps
        self.progress.setFormat("")
        self.eta_label.setText("")
        self.notes.show_text("")
        self.state_label.setText("Loading the data and the model…")
        self.plan_label.setText(f"{description}<br><span style='color:gray'>Run folder: {run.run_dir}</span>")
        run.event.connect(self._on_event)
        run.ended.connect(self._on_ended)
        self.max_lag_ms = None
        self.probe.start()
        self._show_buttons()
        self.running_changed.emit(True)
        # Start once this page has repainted: the trainer's first moments (parsing the data, loading the
        # tokenizer) hold the interpreter lock in C code and would stall that repaint.
        QTimer.singleShot(START_DELAY_MS, run.start)

    def _on_event(self, event) -> None:
        name = self.run.run_dir.name if self.run else ""
        if isinstance(event, PreparedEvent):
            self.total_steps = event.total_steps
            self.progress.setRange(0, event.total_steps)
            self.progress.setValue(event.start_step)
            self.progress.setFormat("step %v of at most %m" if event.ceiling else "step %v of %m")
            self.plots.set_step_range(event.total_steps)
            self.plots.show_kind("epsilon", event.privacy is not None)
            self.plots.set_ceiling("epsilon", event.privacy["epsilon_target"] if event.privacy else None)
            plan = event.plan
            size = f", {plan['size_name']} = {thousands(plan['size'])}" if plan["size_name"] else ""
            self.state_label.setText(
                f"Training {plan['method']}{size}: {thousands(plan['trainable_params'])} trainable parameters, "
                f"{thousands(event.train_examples)} training and {thousands(event.validation_examples)} validation "
                f"examples, {event.length or f'{thousands(event.total_steps)} steps'}.")
            self.notes.show_text("\n".join(event.notes))
        elif isinstance(event, StepEvent):
            self.progress.setValue(event.step)
            spent = f" · ε {event.epsilon:.2f}" if event.epsilon is not None else ""
            self.eta_label.setText(f"{_eta_text(event)} · {event.examples_per_s:,.0f} examples/s{spent}")
            self.plots.add_step(name, event)
        elif isinstance(event, EvalEvent):
            self.plots.add_eval(name, event)
            if event.metrics.get("samples"):
                self.samples.add(event.step, event.metrics["samples"])
                self.samples_box.show()

    def _on_ended(self, result) -> None:
        self.max_lag_ms = self.probe.stop()
        self.run.deleteLater()
        self.run = None
        self.pause_button.setChecked(False)
        self.progress.setRange(0, max(1, self.total_steps))
        if isinstance(result, FailedEvent):
            self.progress.setValue(0)
            self.state_label.setText(f"Training failed: {result.message}")
            self.eta_label.setText("")
            dialogs.show_failure(self, result, "train")
        elif isinstance(result, FinishedEvent) and result.status == "stopped":
            self.state_label.setText("Stopped; a checkpoint is saved. Resume it here or later from History.")
            self.eta_label.setText("")
        else:
            metric = result.metrics.get("metric")
            score = f": validation {metric} {result.metrics[metric]:.4f}" if metric in result.metrics else ""
            if result.metrics.get("privacy"):
                score += f", privacy spent ε = {result.metrics['privacy']['epsilon_spent']:.2f}"
            self.progress.setValue(self.progress.maximum())
            took = f"took {format_duration(result.metrics.get('wall_time_s', 0))}"
            if result.metrics.get("eval_time_s") is not None:
                took += (f" (training {format_duration(result.metrics['train_time_s'])}, evaluation "
                         f"{format_duration(result.metrics['eval_time_s'])})")
            self.eta_label.setText(took)
            why = f"<br>Why it stopped: {result.reason}." if result.reason else ""
            self.state_label.setText(f"Finished ({result.status}){score}.{why}")
        self._show_buttons(result)
        self.running_changed.emit(False)
        self.run_ended.emit(result)

    def _show_buttons(self, result=None) -> None:
        running = self.running
        self.start_button.setVisible(not running)
        self.measure_button.setVisible(not running)
        self.pause_button.setVisible(running)
        self.cancel_button.setVisible(running)
        self.pause_button.setText("Pause")
        self.cancel_button.setEnabled(running)
        stopped = isinstance(result, FinishedEvent) and result.status == "stopped"
        finished = isinstance(result, FinishedEvent) and not stopped
        self.resume_button.setVisible(stopped and not running)
        self.results_button.setVisible(finished and not running)
        if not running:
            self.refresh_plan()


def _eta_text(event: StepEvent) -> str:
    """The ETA; a run that trains until it converges gives its ceiling's, and once the curve has flattened also when
    it stops if it does not improve again."""
    if not event.ceiling:
        return f"ETA {format_duration(event.eta_s)}"
    sooner = (f", {format_duration(event.eta_if_flat_s)} if it does not improve again"
              if event.eta_if_flat_s is not None else "")
    return f"ETA at most {format_duration(event.eta_s)} (the ceiling{sooner})"
