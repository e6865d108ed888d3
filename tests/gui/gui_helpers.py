"""Steps the GUI tests share: choosing a tiny run as a user would, training it, finding error dialogs."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox

TINY_STEPS = 12


def error_dialogs(window) -> list[QMessageBox]:
    return [box for box in window.findChildren(QMessageBox) if box.objectName() == "errorDialog" and box.isVisible()]


def choose_tiny_run(qtbot, window, model: Path, data: Path, steps: int = TINY_STEPS, eval_every: int = 4,
                    method: str = "slash", size: int | None = 32, pooling: str = "cls") -> None:
    """Choose the tiny model, a data file and a short run, as a user would on the first three pages."""
    window.model_page.choose_folder(str(model))
    window.data_page.set_train(str(data))
    qtbot.waitUntil(lambda: window.model_page.info is not None, timeout=60_000)
    qtbot.waitUntil(lambda: window.data_page.summary is not None and not window.data_page.busy, timeout=30_000)
    qtbot.waitUntil(lambda: window.method_page.ready, timeout=60_000)
    page = window.method_page
    page.choose(method, size, pooling=pooling)
    settings = page.training
    settings.set_steps(steps)
    settings.batch_spin.setValue(8)
    settings.max_length_spin.setValue(32)
    settings.eval_spin.setValue(eval_every)
    settings.lr_edit.setText("0.05")
    settings.device_combo.setCurrentIndex(settings.device_combo.findData("cpu"))
    qtbot.waitUntil(lambda: page.plan is not None and not page.busy, timeout=30_000)


def train(qtbot, window, timeout_s: float = 120):
    """Click Start and wait for the run to end; returns its FinishedEvent or FailedEvent."""
    ended = []
    window.train_page.run_ended.connect(ended.append)
    window.show_page(window.train_page)
    window.train_page.start_button.click()
    qtbot.waitUntil(lambda: bool(ended), timeout=int(timeout_s * 1000))
    return ended[0]
