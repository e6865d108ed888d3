"""Fixtures for the desktop app: an isolated window (offscreen) and no blocking dialogs (the small real data,
`sst2_200`, is in the tests' root conftest)."""

from __future__ import annotations

import pytest

from jrft_desktop.gui import dialogs
from jrft_desktop.gui.app import binding_problem
from jrft_desktop.gui.main_window import MainWindow
from jrft_desktop.gui.settings import AppSettings
from jrft_desktop.gui.worker import background_idle


@pytest.fixture(autouse=True)
def no_blocking_dialogs(monkeypatch):
    """A test that expects a file chooser or a confirmation replaces it; any other would block, so it fails."""
    def unexpected(*args, **kwargs):
        raise AssertionError(f"unexpected blocking dialog: {args[1:3]}")

    for name in ("confirm", "choose_open_file", "choose_save_file", "choose_folder"):
        monkeypatch.setattr(dialogs, name, unexpected)


@pytest.fixture(scope="session", autouse=True)
def usable_binding_and_no_leftover_work():
    """Refuse a Qt binding the app refuses; background calls a test started as it ended must not outlive it."""
    problem = binding_problem()
    if problem:
        pytest.fail(problem)
    yield
    background_idle()


@pytest.fixture
def make_window(qtbot):
    """Open windows as the app does (shown, then the pages load); close them cleanly afterwards."""
    windows = []

    def make() -> MainWindow:
        window = MainWindow(AppSettings())
        qtbot.addWidget(window)
        window.show_on_screen()
        window.load_pages()
        windows.append(window)
        return window

    yield make
    for window in windows:
        if window.train_page.running:
            window.train_page.cancel()
            qtbot.waitUntil(lambda window=window: not window.train_page.running, timeout=60_000)
    background_idle()


@pytest.fixture
def window(make_window) -> MainWindow:
    return make_window()

