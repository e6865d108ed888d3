"""Screenshots of every page from a real session: the bundled model on the bundled SST-2 sample.

Run under a virtual display (runs and settings go to a temporary JRFT_HOME; about two minutes on a laptop CPU):

    Xvfb :99 -screen 0 1400x900x24 &
    DISPLAY=:99 .venv/bin/python docs/screenshots/take_screenshots.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("JRFT_HOME", tempfile.mkdtemp(prefix="jrft-screenshots-"))

from PySide6.QtWidgets import QApplication

from jrft_desktop.core.events import StepEvent
from jrft_desktop.gui.main_window import MainWindow
from jrft_desktop.gui.self_test import wait_until
from jrft_desktop.gui.settings import AppSettings

OUT = Path(__file__).resolve().parent
SIZE = (1380, 860)


def save(window: MainWindow, name: str) -> None:
    QApplication.processEvents()
    window.grab().save(str(OUT / f"{name}.png"))
    print(f"saved {name}.png", flush=True)


def train(window: MainWindow, preset: str, steps: int, capture_at: int | None = None) -> None:
    """Train one run with the current choices; optionally take the Train page's picture mid-run."""
    method = window.method_page
    method.choose_preset(preset)
    method.choose(method.method.name, pooling="cls")
    method.training.set_steps(steps)
    method.training.eval_spin.setValue(steps // 5)
    method.training.max_length_spin.setValue(64)
    wait_until(window, lambda: method.plan is not None and not method.busy, 60, "count the parameters")
    window.show_page(window.train_page)
    ended, reached = [], []
    window.train_page.run_ended.connect(ended.append)
    window.train_page.start_button.click()
    window.train_page.run.event.connect(
        lambda event: isinstance(event, StepEvent) and event.step == capture_at and reached.append(True))
    if capture_at:
        wait_until(window, lambda: bool(reached), 600, "train to the capture point")
        wait_until(window, lambda: window.train_page.plots.point_count("loss") >= capture_at, 10, "draw")
        save(window, "04-train")
    wait_until(window, lambda: bool(ended), 900, f"train {preset}")


def main() -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow(AppSettings())
    window.resize(*SIZE)
    window.show_on_screen()
    window.load_pages()

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
    method.choose_preset("SLaSh d=1024 (paper)")
    method.choose("slash", pooling="cls")
    method.training.set_steps(120)
    method.training.eval_spin.setValue(20)
    method.training.max_length_spin.setValue(64)
    wait_until(window, lambda: method.plan is not None and not method.busy, 60, "count the parameters")
    save(window, "03-method")

    train(window, "Linear head only", 120)
    train(window, "SLaSh d=1024 (paper)", 120, capture_at=80)

    results = window.results_page
    window.show_page(results)
    wait_until(window, lambda: results.confusion is not None, 300, "compute the confusion matrix")
    results.try_edit.setText("a gorgeous, witty and moving film")
    results.try_text()
    wait_until(window, lambda: results.prediction is not None, 60, "classify")
    save(window, "05-results")
    results.tabs.setCurrentIndex(1)
    save(window, "06-results-curves")
    results.tabs.setCurrentIndex(0)

    history = window.history_page
    window.show_page(history)
    wait_until(window, lambda: not history.busy and len(history.runs) == 2, 60, "list the runs")
    history.select([run.name for run in history.runs])
    history.compare_button.click()
    wait_until(window, lambda: history.comparison.isVisible() and history.compare_table.rowCount() == 2, 60,
               "compare")
    save(window, "07-history")

    window.apply_theme("dark")
    window.show_page(window.train_page)
    save(window, "08-train-dark")
    window.apply_theme("light")
    window.close()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
