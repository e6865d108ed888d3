"""Starting the app: torch loads only after the window is on screen; settings persist; the entry points."""

import importlib.metadata
import os
import subprocess
import sys
import time

from gui_helpers import error_dialogs
from PySide6.QtCore import QTimer

from jrft_desktop.core.events import FailedEvent
from jrft_desktop.core.paths import config_dir
from jrft_desktop.gui.app import parse_args, report_bug
from jrft_desktop.gui.lag_probe import LagProbe
from jrft_desktop.gui.settings import SETTINGS_FILE, AppSettings
from jrft_desktop.gui.worker import LatestRequest, run_in_background

SHOW_WINDOW = """
import sys
from PySide6.QtWidgets import QApplication
from jrft_desktop.gui.main_window import MainWindow
from jrft_desktop.gui.settings import AppSettings
app = QApplication([])
window = MainWindow(AppSettings())
window.show_on_screen()
print("torch" in sys.modules, window.isVisible())
"""


def test_the_window_shows_before_torch_loads(tmp_path):
    done = subprocess.run([sys.executable, "-c", SHOW_WINDOW], check=False, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "JRFT_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_entry_points():
    scripts = {entry.name: entry.value for entry in importlib.metadata.entry_points(group="gui_scripts")}
    assert scripts.get("jrft-desktop") == "jrft_desktop.gui.app:main"
    assert parse_args(["--self-test", "--timing"]).self_test
    done = subprocess.run([sys.executable, "-m", "jrft_desktop", "--help"], check=False, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "--self-test" in done.stdout


def test_settings_persist_in_the_config_folder(qtbot, make_window, sst2_200, tiny_models):
    window = make_window()
    window.apply_theme("dark")
    window.model_page.choose_folder(str(tiny_models["bert"]))
    window.data_page.set_train(str(sst2_200))
    window.resize(1111, 777)
    window.close()
    assert (config_dir() / SETTINGS_FILE).is_file()
    assert AppSettings().geometry == window.saveGeometry()  # restored by the next window (screen permitting)

    again = make_window()
    assert again.settings.theme == "dark"
    assert [action.data() for action in again.theme_actions.actions() if action.isChecked()] == ["dark"]
    assert again.model_page.folder_radio.isChecked() and again.model_page.folder_edit.text() == str(tiny_models["bert"])
    assert again.data_page.train_edit.text() == str(sst2_200)
    again.apply_theme("light")
    assert AppSettings().theme == "light"


def test_lag_probe_sees_a_blocked_event_loop(qtbot):
    probe = LagProbe()
    probe.start()
    QTimer.singleShot(60, lambda: time.sleep(0.15))
    qtbot.wait(400)
    assert probe.stop() >= 100 and probe.ticks > 5
    assert len(probe.long_blocks_ms) == 1 and probe.long_blocks_ms[0] == probe.max_lag_ms
    assert probe.smooth(100, 300)  # one short stall passes (a busy shared host makes those) ...
    assert not probe.smooth(100, 120)  # ... unless it is longer than the one stall allowed

    probe.start()
    for delay in (60, 260):
        QTimer.singleShot(delay, lambda: time.sleep(0.15))
    qtbot.wait(600)
    probe.stop()
    assert len(probe.long_blocks_ms) == 2 and not probe.smooth(100, 300)  # blocked again: not smooth


def test_background_calls_report_results_errors_and_only_the_latest_answer(qtbot, window):
    answers, failures = [], []
    run_in_background(window, lambda: 1 / 0, on_result=answers.append, on_error=failures.append)
    qtbot.waitUntil(lambda: bool(failures), timeout=10_000)
    assert isinstance(failures[0], FailedEvent) and "ZeroDivisionError" in failures[0].message
    assert not failures[0].user_error and "Traceback" in failures[0].details

    latest = LatestRequest(window, lambda delay, value: time.sleep(delay) or value, answers.append, failures.append)
    latest.request(0.3, "stale")
    latest.request(0.0, "fresh")
    qtbot.waitUntil(lambda: not latest.busy, timeout=10_000)
    qtbot.wait(400)
    assert answers == ["fresh"]


def test_an_unexpected_error_in_the_ui_opens_a_dialog(window, capsys):
    try:
        raise ValueError("a slot went wrong")
    except ValueError as error:
        report_bug(window, ValueError, error, error.__traceback__)
    boxes = error_dialogs(window)
    assert len(boxes) == 1 and "ValueError: a slot went wrong" in boxes[0].text()
    assert "Traceback" in boxes[0].detailedText() and "Traceback" in capsys.readouterr().err
