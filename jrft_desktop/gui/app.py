"""Start the desktop app: `jrft-desktop` or `python -m jrft_desktop`.

torch is not imported here or by the window: the window is on screen first, then the pages load the model
description, the methods and the data in background threads (which is where torch loads)."""

import time

LAUNCHED = time.perf_counter()  # before Qt and the app's modules load: the start of the time-to-window

import argparse
import os
import sys
import tempfile


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jrft-desktop", description="JRFT Desktop: finetune transformers with a "
                                                                      "few thousand parameters.")
    parser.add_argument("--self-test", action="store_true",
                        help="Drive the window through choosing, training, results and both exports on the bundled "
                             "sample, then exit 0 only if all of it worked (runs go to a temporary folder).")
    parser.add_argument("--timing", action="store_true",
                        help="Print the time to the window and, after each run, the longest the UI was blocked.")
    menu = parser.add_mutually_exclusive_group()
    menu.add_argument("--install-desktop-entry", action="store_true",
                      help="Add the app to your Linux application menu (a .desktop file and icons under "
                           "$XDG_DATA_HOME, default ~/.local/share) and exit.")
    menu.add_argument("--uninstall-desktop-entry", action="store_true",
                      help="Remove what --install-desktop-entry wrote and exit.")
    return parser.parse_known_args(argv)[0]


def binding_problem() -> str:
    """Why the installed Qt binding cannot run the app ('' when it can)."""
    import PySide6

    if PySide6.__version__ == "6.12.0" and sys.version_info < (3, 12):
        return ("PySide6 6.12.0 drops a reference to None on every call of a void Qt method under Python 3.11 and "
                "older, so the app would crash after a few thousand calls. Install another version: "
                "pip install 'PySide6-Essentials!=6.12.0'")
    return ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.install_desktop_entry or args.uninstall_desktop_entry:
        return change_desktop_entry(install=args.install_desktop_entry)
    problem = binding_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.self_test and "JRFT_HOME" not in os.environ:  # its runs and settings never touch the user's
        with tempfile.TemporaryDirectory(prefix="jrft-self-test-") as scratch:
            os.environ["JRFT_HOME"] = scratch
            try:
                return _run(args)
            finally:
                del os.environ["JRFT_HOME"]
    return _run(args)


def change_desktop_entry(install: bool) -> int:
    from ..core.errors import UserError
    from . import desktop_entry

    try:
        files = desktop_entry.install() if install else desktop_entry.uninstall()
    except (OSError, UserError) as error:  # a read-only or full home folder: one line, no traceback
        print(f"error: cannot {'write' if install else 'remove'} the menu entry: {error}", file=sys.stderr)
        return 2
    if files:
        print(f"{'installed' if install else 'removed'} {len(files)} files:", *files, sep="\n  ")
    else:
        print(f"no menu entry of this app under {desktop_entry.xdg_data_home()}")
    return 0


def report_bug(window, kind, error, trace) -> None:
    """An exception escaping a Qt slot is a bug: say so in a dialog and keep the app running."""
    import traceback

    from . import dialogs

    details = "".join(traceback.format_exception(kind, error, trace))
    print(details, file=sys.stderr)
    dialogs.show_error(window, f"Something unexpected went wrong ({kind.__name__}: {error}). The app keeps "
                               "running; the details below help to report it.", details, title="Unexpected error")


def _run(args: argparse.Namespace) -> int:
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow
    from .settings import AppSettings
    from .worker import background_idle

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("JRFT Desktop")
    app.setDesktopFileName("jrft-desktop")
    window = MainWindow(AppSettings())
    sys.excepthook = lambda kind, error, trace: report_bug(window, kind, error, trace)
    shown = window.show_on_screen() - LAUNCHED
    torch_loaded = "torch" in sys.modules
    window.load_pages()
    if args.timing:
        print(f"timing: window on screen {shown:.2f} s after start (torch imported by then: "
              f"{'yes' if torch_loaded else 'no'})", flush=True)
        window.train_page.run_ended.connect(lambda result: print(
            f"timing: longest UI-thread block during the run: {window.train_page.max_lag_ms:.0f} ms", flush=True))
    if args.self_test:
        from .self_test import SelfTest

        status = SelfTest(window).run()
    else:
        status = app.exec()
    background_idle()
    return status
