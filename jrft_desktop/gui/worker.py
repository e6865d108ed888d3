"""Work off the UI thread: training in a QObject worker on its own QThread, and short background calls.

The trainer reports through callbacks carrying frozen dataclasses (core/events.py); the worker re-emits them as
`object` signals, which Qt queues to the UI thread. Pause and Cancel set the trainer's `threading.Event`s, which
it checks at every step."""

from __future__ import annotations

import gc
import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal, Slot
from shiboken6 import isValid

from ..core.config import RunConfig
from ..core.errors import UserError
from ..core.events import FailedEvent, FinishedEvent, PreparedEvent

BACKGROUND_NICENESS = 10


def lower_thread_priority() -> None:
    """Let the calling (background) thread yield the CPU to the UI thread. On Linux only the thread is reniced
    (and the torch threads it starts inherit that); elsewhere QThread priorities do this."""
    if sys.platform.startswith("linux"):
        try:  # the main thread's id is the process id: the background runs that much nicer than the UI
            niceness = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + BACKGROUND_NICENESS)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        except OSError:  # not permitted in some sandboxes: the UI is then merely less smooth
            pass


def failure_of(error: BaseException) -> FailedEvent:
    """The exception as the trainer would report it: a user error's message stands alone."""
    user_error = isinstance(error, UserError)
    message = str(error) if user_error else f"{type(error).__name__}: {error}"
    return FailedEvent(message, "".join(traceback.format_exception(error)), user_error)


class TrainingWorker(QObject):
    """Runs one `Trainer` (new or resumed) when its thread starts."""

    event = Signal(object)  # PreparedEvent, StepEvent, EvalEvent, CheckpointEvent, in order
    ended = Signal(object)  # the FinishedEvent or FailedEvent, exactly once

    def __init__(self, config: RunConfig | None, run_dir: Path, resume: bool):
        super().__init__()
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.stop_event = threading.Event()
        self.pause_event = threading.Event()
        self._failure: FailedEvent | None = None

    @Slot()
    def run(self) -> None:
        lower_thread_priority()
        try:
            from .backend import load_engine

            load_engine()  # torch loads here (if no page loaded it yet), in the worker thread
            gc.freeze()  # the pages' objects made since the engine loaded are long-lived too (see _relay)
            from ..core.train.loop import Trainer

            trainer = Trainer(self.config, self.run_dir, [self._relay], self.stop_event, self.pause_event,
                              self.resume)
            result: FinishedEvent | FailedEvent = trainer.run()
        except BaseException as error:  # noqa: BLE001 - every failure must reach the UI, never kill the thread
            result = self._failure or failure_of(error)
        self.ended.emit(result)

    def _relay(self, event) -> None:
        if isinstance(event, PreparedEvent):
            # The model, the data and a first run's lazy imports are some 50,000 new objects. Left to the cyclic
            # collector, each full collection during training walks them all with the interpreter lock held
            # (35 ms, 440 ms on a busy machine): the UI stalls. Frozen, they are still freed by reference counting
            # after the run (tests/gui/test_training.py checks that nothing piles up run after run).
            gc.freeze()
        if isinstance(event, FailedEvent):
            self._failure = event
        elif not isinstance(event, FinishedEvent):  # the end arrives once, through `ended`
            self.event.emit(event)


class TrainingRun(QObject):
    """One training run on its own thread, with Pause, Resume and Cancel. Emits `ended` after the thread is done."""

    event = Signal(object)
    ended = Signal(object)

    def __init__(self, config: RunConfig | None, run_dir: Path, resume: bool = False, parent: QObject | None = None):
        super().__init__(parent)
        self.run_dir = Path(run_dir)
        self.result: FinishedEvent | FailedEvent | None = None
        self._thread = QThread(self)
        self._thread.setObjectName(f"training {self.run_dir.name}")
        self._worker = TrainingWorker(config, run_dir, resume)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.event.connect(self.event)
        self._worker.ended.connect(self._on_worker_ended)
        self._thread.finished.connect(self._on_thread_finished)

    def start(self) -> None:
        self._thread.start(QThread.Priority.LowPriority)

    @property
    def running(self) -> bool:
        return self._thread.isRunning()

    @property
    def paused(self) -> bool:
        return self._worker.pause_event.is_set()

    def set_paused(self, paused: bool) -> None:
        if paused:
            self._worker.pause_event.set()
        else:
            self._worker.pause_event.clear()

    def cancel(self) -> None:
        """Stop after the current step; the trainer checkpoints, so the run can be resumed later."""
        self._worker.stop_event.set()

    def wait(self, milliseconds: int = -1) -> bool:
        return self._thread.wait(milliseconds) if milliseconds >= 0 else self._thread.wait()

    @Slot(object)
    def _on_worker_ended(self, result) -> None:
        self.result = result
        self._thread.quit()

    @Slot()
    def _on_thread_finished(self) -> None:
        self.ended.emit(self.result)


# --- short background calls ---------------------------------------------------------------------------------
class _Delivery(QObject):
    """Lives in the UI thread; its signals, emitted from a pool thread, are queued back to it."""

    succeeded = Signal(object)
    failed = Signal(object)

    def __init__(self, owner: QObject, on_result: Callable[[Any], None],
                 on_error: Callable[[FailedEvent], None] | None):
        super().__init__()
        self.owner, self.on_result, self.on_error = owner, on_result, on_error
        self.succeeded.connect(self._deliver_result)
        self.failed.connect(self._deliver_error)

    @Slot(object)
    def _deliver_result(self, value) -> None:
        _PENDING.discard(self)
        if isValid(self.owner):  # the page may have closed meanwhile
            self.on_result(value)

    @Slot(object)
    def _deliver_error(self, failure: FailedEvent) -> None:
        _PENDING.discard(self)
        if self.on_error is not None and isValid(self.owner):
            self.on_error(failure)


_PENDING: set[_Delivery] = set()  # deliveries in flight, kept alive until their answer arrives


class _Call(QRunnable):
    def __init__(self, function: Callable, args: tuple, delivery: _Delivery):
        super().__init__()
        self.function, self.args, self.delivery = function, args, delivery

    def run(self) -> None:
        lower_thread_priority()
        try:
            value = self.function(*self.args)
        except BaseException as error:  # noqa: BLE001 - reported to the UI as a FailedEvent
            signal, value = self.delivery.failed, failure_of(error)
        else:
            signal = self.delivery.succeeded
        try:
            signal.emit(value)
        except RuntimeError:  # the app is shutting down and took the receiver with it: nobody waits for this
            pass


def run_in_background(owner: QObject, function: Callable, *args, on_result: Callable[[Any], None],
                      on_error: Callable[[FailedEvent], None] | None = None) -> None:
    """Call `function(*args)` on the thread pool; the answer comes back on the UI thread while `owner` lives."""
    delivery = _Delivery(owner, on_result, on_error)
    _PENDING.add(delivery)
    QThreadPool.globalInstance().start(_Call(function, args, delivery))


def background_idle(milliseconds: int = 30_000) -> bool:
    """Wait for the background calls to finish (tests and shutdown)."""
    return QThreadPool.globalInstance().waitForDone(milliseconds)


class LatestRequest:
    """A background call where only the answer to the newest request counts (older ones are stale)."""

    def __init__(self, owner: QObject, function: Callable, on_result: Callable[[Any], None],
                 on_error: Callable[[FailedEvent], None]):
        self.owner, self.function, self.on_result, self.on_error = owner, function, on_result, on_error
        self._serial = 0
        self._answered = 0

    @property
    def busy(self) -> bool:
        return self._answered < self._serial

    def request(self, *args) -> None:
        self._serial += 1
        serial = self._serial
        run_in_background(self.owner, self.function, *args,
                          on_result=lambda value: self._answer(serial, self.on_result, value),
                          on_error=lambda failure: self._answer(serial, self.on_error, failure))

    def forget(self) -> None:
        """Ignore the answer of any request in flight."""
        self._serial += 1
        self._answered = self._serial

    def _answer(self, serial: int, handler: Callable, value) -> None:
        if serial == self._serial:
            self._answered = serial
            handler(value)
