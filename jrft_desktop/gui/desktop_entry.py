"""Put the app into the current user's Linux application menu: a freedesktop.org desktop entry and the icons.

`jrft-desktop --install-desktop-entry` writes $XDG_DATA_HOME/applications/jrft-desktop.desktop (XDG_DATA_HOME
defaults to ~/.local/share), whose Exec line starts this very installation (virtual environment or frozen app),
and the icon in every hicolor size; `--uninstall-desktop-entry` removes exactly those files. No Qt needed."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from ..core.paths import atomic_write, atomic_write_text, resources_dir, xdg_data_home

# The file's name is the app's id: it matches QGuiApplication.setDesktopFileName, so docks group the windows with it.
DESKTOP_FILE = "jrft-desktop.desktop"
ICON_NAME = "jrft-desktop"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICONS_DIR = resources_dir() / "icons"
SVG_ICON = ICONS_DIR / "jrft.svg"
HICOLOR_DIR = ICONS_DIR / "hicolor"  # the rendered PNGs (packaging/render_icons.py), laid out as in the theme
TEMPLATE = resources_dir() / DESKTOP_FILE
_NEEDS_QUOTES = re.compile(r"[\s\"'\\><~|&;$*?#()`]")


def launch_command() -> list[str]:
    """The command that starts this installation of the app."""
    if getattr(sys, "frozen", False):  # a PyInstaller folder: the executable is the app
        return [sys.executable]
    script = Path(sys.executable).parent / "jrft-desktop"  # the launcher pip put beside this environment's python
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "jrft_desktop"]


def exec_argument(argument: str) -> str:
    """One argument of an Exec line, quoted and escaped as the Desktop Entry Specification requires."""
    if _NEEDS_QUOTES.search(argument):
        argument = '"' + re.sub(r'(["`$\\])', r"\\\1", argument) + '"'
    # then the escapes of every string value (a backslash is written twice) and of field codes (% is written twice)
    return argument.replace("\\", "\\\\").replace("%", "%%")


def desktop_entry_text(command: list[str]) -> str:
    """The packaged template with Exec and TryExec pointing at `command`."""
    lines = []
    for line in TEMPLATE.read_text(encoding="utf-8").splitlines():
        if line.startswith("Exec="):
            line = "Exec=" + " ".join(exec_argument(part) for part in command)
        elif line.startswith("TryExec="):  # menus hide the entry once the program is gone
            line = "TryExec=" + command[0].replace("\\", "\\\\")
        lines.append(line)
    return "\n".join(lines) + "\n"


def entry_path(data_home: Path | None = None) -> Path:
    return (data_home or xdg_data_home()) / "applications" / DESKTOP_FILE


def icon_files(data_home: Path | None = None) -> dict[Path, Path]:
    """Each icon file of the entry -> its packaged source."""
    icons = (data_home or xdg_data_home()) / "icons" / "hicolor"
    files = {}
    for size in ICON_SIZES:
        relative = Path(f"{size}x{size}") / "apps" / f"{ICON_NAME}.png"
        files[icons / relative] = HICOLOR_DIR / relative
    files[icons / "scalable" / "apps" / f"{ICON_NAME}.svg"] = SVG_ICON
    return files


def installed_files(data_home: Path | None = None) -> list[Path]:
    return [entry_path(data_home), *icon_files(data_home)]


def install(data_home: Path | None = None) -> list[Path]:
    """Write the icons, then the desktop entry (so a menu that sees the entry finds its icon); return the files."""
    for target, source in icon_files(data_home).items():
        atomic_write(target, lambda temp, source=source: shutil.copyfile(source, temp))
    atomic_write_text(entry_path(data_home), desktop_entry_text(launch_command()))
    return installed_files(data_home)


def uninstall(data_home: Path | None = None) -> list[Path]:
    """Remove what `install` wrote; return the files removed."""
    removed = []
    for target in installed_files(data_home):
        if target.is_file():
            target.unlink()
            removed.append(target)
    return removed
