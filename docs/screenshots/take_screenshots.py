"""Screenshots of every page from a real session: the bundled model on the bundled SST-2 sample.

Run under a virtual display (runs and settings go to a temporary JRFT_HOME). It trains for real: 40 private steps
of SLaSh, 120 steps of the linear head and of SLaSh, then a four-method comparison; 8 minutes on an idle 2-core
machine (24 when other jobs shared it), most of it the three runs and the comparison.

    Xvfb :99 -screen 0 1400x900x24 &
    DISPLAY=:99 .venv/bin/python docs/screenshots/take_screenshots.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JRFT_HOME", tempfile.mkdtemp(prefix="jrft-screenshots-"))

from PySide6.QtWidgets import QApplication, QScrollArea

from jrft_desktop.core.events import StepEvent
from jrft_desktop.gui.main_window import MainWindow
from jrft_desktop.gui.self_test import wait_until
from jrft_desktop.gui.settings import AppSettings

OUT = Path(__file__).resolve().parent
SIZE = (1380, 860)
SLASH = "SLaSh d=1024 (paper)"
PRIVATE_EPSILON = 8.0
PRIVATE_STEPS = 40  # private steps are several times slower: per-example gradients
COMPARED = ("slash-output", "head", "lora", "full")
COMPARE_STEPS = 30
COMPARE_CURVE = "64 1024"
STARTED = time.perf_counter()


def open_window(size: tuple[int, int] = SIZE) -> tuple[QApplication, MainWindow]:
    """The app's window on screen at the screenshots' size, its pages loading as at a start."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow(AppSettings())
    window.resize(*size)
    window.show_on_screen()
    window.load_pages()
    return app, window


def save(window: MainWindow, name: str) -> None:
    QApplication.processEvents()
    window.grab().save(str(OUT / f"{name}.png"))
    print(f"saved {name}.png after {time.perf_counter() - STARTED:.0f} s", flush=True)


def read_sample(window: MainWindow) -> None:
    """The bundled SST-2 sample on the Data page, then the Method page with its methods listed."""
    data = window.data_page
    window.show_page(data)
    data.use_sample()
    wait_until(window, lambda: data.summary is not None and not data.busy, 120, "read the sample")
    method = window.method_page
    window.show_page(method)
    wait_until(window, lambda: method.ready, 120, "load the methods")


def choose(window: MainWindow, preset: str, steps: int, eval_every: int) -> None:
    """Choose a preset and a short schedule on the Method page, and wait for its parameter count."""
    method = window.method_page
    method.choose_preset(preset)
    method.choose(method.method.name, pooling="cls")
    method.training.set_steps(steps)
    method.training.eval_spin.setValue(eval_every)
    method.training.max_length_spin.setValue(64)
    wait_until(window, lambda: method.plan is not None and not method.busy, 60, "count the parameters")


def wait_for_noise(window: MainWindow) -> None:
    privacy = window.method_page.privacy
    wait_until(window, lambda: not privacy.busy and privacy.plan is not None, 120, "compute the noise σ")


def train(window: MainWindow, preset: str, steps: int, shot: str | None = None, capture_at: int | None = None,
          eval_every: int | None = None) -> None:
    """Train one run with the current choices; take the Train page's picture `shot` at step `capture_at`, or once
    the run ended."""
    choose(window, preset, steps, eval_every or steps // 5)
    if window.method_page.privacy.active:
        wait_for_noise(window)
    train_page = window.train_page
    window.show_page(train_page)
    ended, reached = [], []
    train_page.run_ended.connect(ended.append)
    train_page.start_button.click()
    train_page.run.event.connect(
        lambda event: isinstance(event, StepEvent) and event.step == capture_at and reached.append(True))
    if shot and capture_at:
        wait_until(window, lambda: bool(reached), 600, "train to the capture point")
        wait_until(window, lambda: train_page.plots.point_count("loss") >= capture_at, 10, "draw")
        save(window, shot)
    wait_until(window, lambda: bool(ended), 900, f"train {preset}")
    train_page.run_ended.disconnect(ended.append)
    if shot and not capture_at:
        QApplication.processEvents()
        time.sleep(0.5)  # past the plots' redraw timer
        save(window, shot)


def main() -> int:
    app, window = open_window()

    wait_until(window, lambda: window.model_page.info is not None, 120, "describe the model")
    save(window, "01-model")

    data = window.data_page
    window.show_page(data)
    data.use_sample()
    wait_until(window, lambda: data.summary is not None and not data.busy, 60, "read the sample")
    save(window, "02-data")

    method = window.method_page
    window.show_page(method)
    wait_until(window, lambda: method.ready, 120, "load the methods")
    choose(window, SLASH, 120, 20)
    save(window, "03-method")

    method.privacy.set_enabled(True, epsilon=PRIVATE_EPSILON)
    choose(window, SLASH, PRIVATE_STEPS, 10)
    wait_for_noise(window)
    method.findChild(QScrollArea).ensureWidgetVisible(method.privacy, 0, 16)
    save(window, "04-method-private")
    train(window, SLASH, PRIVATE_STEPS, shot="06-train-private", eval_every=10)
    method.privacy.set_enabled(False)

    train(window, "Linear head only", 120)
    train(window, SLASH, 120, shot="05-train", capture_at=80)

    results = window.results_page
    window.show_page(results)
    wait_until(window, lambda: results.confusion is not None, 300, "compute the confusion matrix")
    results.try_edit.setText("a gorgeous, witty and moving film")
    results.try_text()
    wait_until(window, lambda: results.prediction is not None, 60, "classify")
    save(window, "07-results")
    results.tabs.setCurrentIndex(1)
    save(window, "08-results-curves")
    results.tabs.setCurrentIndex(0)

    history = window.history_page
    window.show_page(history)
    wait_until(window, lambda: not history.busy and len(history.runs) == 3, 60, "list the runs")
    history.select([run.name for run in history.runs])
    history.compare_button.click()
    wait_until(window, lambda: history.comparison.isVisible() and history.compare_table.rowCount() == 3, 60,
               "compare")
    save(window, "09-history")

    compare = window.compare_page
    window.show_page(compare)
    wait_until(window, lambda: compare.run_button.isEnabled(), 60, "list the methods to compare")
    compare.choose(COMPARED)
    compare.steps_spin.setValue(COMPARE_STEPS)
    compare.curve_edit.setText(COMPARE_CURVE)
    compare.run_button.click()
    wait_until(window, lambda: compare.result is not None and not compare.running, 1800, "compare the methods")
    save(window, "10-compare")

    window.apply_theme("dark")
    window.show_page(window.train_page)
    save(window, "11-train-dark")
    window.apply_theme("light")
    window.close()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
