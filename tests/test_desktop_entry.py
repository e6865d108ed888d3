"""`jrft-desktop --install-desktop-entry` puts the app into the user's Linux menu (desktop entry + hicolor icons)."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from jrft_desktop.gui import desktop_entry


def run_app(*args: str, data_home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jrft_desktop", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "XDG_DATA_HOME": str(data_home)})


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", path
    return struct.unpack(">II", header[16:24])


def read_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


def test_install_writes_the_entry_and_every_icon_size_then_uninstall_removes_them(tmp_path):
    data_home = tmp_path / "share"
    installed = run_app("--install-desktop-entry", data_home=data_home)
    assert installed.returncode == 0, installed.stderr

    entry_file = data_home / "applications" / "jrft-desktop.desktop"
    entry = read_entry(entry_file)
    assert entry["Type"] == "Application" and entry["Name"] == "JRFT Desktop" and entry["Terminal"] == "false"
    assert entry["Icon"] == "jrft-desktop"
    command = shlex.split(entry["Exec"])  # no reserved characters in this path: shell quoting reads it the same
    assert command == desktop_entry.launch_command() and entry["TryExec"] == command[0]
    assert os.access(command[0], os.X_OK)
    started = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert started.returncode == 0 and "--self-test" in started.stdout  # the menu's command starts this app

    icons = data_home / "icons" / "hicolor"
    for size in desktop_entry.ICON_SIZES:
        png = icons / f"{size}x{size}" / "apps" / "jrft-desktop.png"
        assert png_size(png) == (size, size)
    assert (icons / "scalable" / "apps" / "jrft-desktop.svg").read_bytes() == desktop_entry.SVG_ICON.read_bytes()
    written = sorted(path for path in data_home.rglob("*") if path.is_file())
    assert written == sorted(desktop_entry.installed_files(data_home))
    assert sorted(Path(line.strip()) for line in installed.stdout.splitlines()[1:]) == written  # it lists them
    if shutil.which("desktop-file-validate"):  # desktop-file-utils, where installed
        validated = subprocess.run(["desktop-file-validate", str(entry_file)], capture_output=True, text=True)
        assert validated.returncode == 0 and not validated.stdout.strip(), validated.stdout

    removed = run_app("--uninstall-desktop-entry", data_home=data_home)
    assert removed.returncode == 0, removed.stderr
    assert not [path for path in data_home.rglob("*") if path.is_file()]
    again = run_app("--uninstall-desktop-entry", data_home=data_home)
    assert again.returncode == 0 and "no menu entry" in again.stdout


def test_exec_arguments_are_quoted_as_the_specification_says():
    assert desktop_entry.exec_argument("/opt/jrft/jrft-desktop") == "/opt/jrft/jrft-desktop"
    # quoted because of the space; $ escaped for the quoting, then its backslash doubled as in every string value
    assert desktop_entry.exec_argument("/home/a b/$x/app") == '"/home/a b/\\\\$x/app"'
    assert desktop_entry.exec_argument("/home/100%/app") == "/home/100%%/app"
    text = desktop_entry.desktop_entry_text(["/home/a b/bin/jrft-desktop"])
    assert 'Exec="/home/a b/bin/jrft-desktop"\n' in text and "TryExec=/home/a b/bin/jrft-desktop\n" in text


def test_the_default_menu_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert desktop_entry.xdg_data_home() == tmp_path
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the specification says to ignore relative paths
    assert desktop_entry.xdg_data_home() == Path.home() / ".local" / "share"


def test_an_unwritable_menu_folder_is_one_line_and_exit_2(tmp_path):
    not_a_folder = tmp_path / "share"
    not_a_folder.write_text("a file where the data folder should be")
    failed = run_app("--install-desktop-entry", data_home=not_a_folder)
    assert failed.returncode == 2
    assert failed.stderr.startswith("error: cannot write the menu entry") and len(failed.stderr.splitlines()) == 1
    assert not_a_folder.read_text() == "a file where the data folder should be"
