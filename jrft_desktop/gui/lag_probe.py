"""Measures how responsive the UI thread is: a 20 ms timer notes how late each tick arrives."""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Qt, QTimer


RECORDED_MS = 50  # blocks at least this long are kept one by one (a smooth UI has hardly any)


class LagProbe(QObject):
    """`max_lag_ms` is the longest the event loop was blocked (beyond the timer interval) since `start()`;
    `long_blocks_ms` every block of at least RECORDED_MS."""

    def __init__(self, interval_ms: int = 20, parent: QObject | None = None):
        super().__init__(parent)
        self.interval_ms = interval_ms
        self.max_lag_ms = 0.0
        self.long_blocks_ms: list[float] = []
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
        self.long_blocks_ms = []
        self.ticks = 0
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> float:
        self._timer.stop()
        return self.max_lag_ms

    def smooth(self, limit_ms: float, once_ms: float) -> bool:
        """No block over `limit_ms`, or a single one under `once_ms`. A shared host that pauses the whole process
        for a moment (CI's machines do) shows up as one late tick; an app that blocks its own UI does it again and
        again, or for long."""
        return sum(lag > limit_ms for lag in self.long_blocks_ms) <= 1 and self.max_lag_ms <= once_ms

    def _tick(self) -> None:
        now = time.perf_counter()
        lag = (now - self._last) * 1000 - self.interval_ms
        self.max_lag_ms = max(self.max_lag_ms, lag)
        if lag >= RECORDED_MS:
            self.long_blocks_ms.append(lag)
        self.ticks += 1
        self._last = now
