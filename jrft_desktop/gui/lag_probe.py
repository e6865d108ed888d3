"""Measures how responsive the UI thread is: a 20 ms timer notes how late each tick arrives."""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Qt, QTimer


class LagProbe(QObject):
    """`max_lag_ms` is the longest the event loop was blocked (beyond the timer interval) since `start()`."""

    def __init__(self, interval_ms: int = 20, parent: QObject | None = None):
        super().__init__(parent)
        self.interval_ms = interval_ms
        self.max_lag_ms = 0.0
        self.ticks = 0
        self._last = 0.0
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    @property
    def running(self) -> bool:
        return self._timer.isActive()

    def start(self) -> None:
        self.max_lag_ms = 0.0
        self.ticks = 0
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> float:
        self._timer.stop()
        return self.max_lag_ms

    def _tick(self) -> None:
        now = time.perf_counter()
        self.max_lag_ms = max(self.max_lag_ms, (now - self._last) * 1000 - self.interval_ms)
        self.ticks += 1
        self._last = now
