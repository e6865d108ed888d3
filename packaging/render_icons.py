"""Render the app icon (resources/icons/jrft.svg) into the PNG sizes of the freedesktop hicolor theme.

The PNGs are committed: menus, docks and installers need bitmaps, and the wheel should not need a renderer.
Run again after changing the SVG:  QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/render_icons.py"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jrft_desktop.gui.desktop_entry import ICON_NAME, ICON_SIZES, HICOLOR_DIR, SVG_ICON  # noqa: E402


def render(size: int, target: Path) -> None:
    renderer = QSvgRenderer(str(SVG_ICON))
    if not renderer.isValid():
        raise SystemExit(f"{SVG_ICON} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    target.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(target), "PNG"):
        raise SystemExit(f"could not write {target}")


def main() -> int:
    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # painting needs an application
    for size in ICON_SIZES:
        target = HICOLOR_DIR / f"{size}x{size}" / "apps" / f"{ICON_NAME}.png"
        render(size, target)
        print(f"{target.relative_to(ROOT)}  ({target.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
