"""What the app remembers between sessions, in an ini file under the config folder (JRFT_HOME isolates it)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from ..core.paths import config_dir

SETTINGS_FILE = "desktop.ini"

MODEL = "choices/model"
TRAIN_DATA = "choices/train_data"
VALIDATION_DATA = "choices/validation_data"
DATA_FOLDER = "folders/data"
MODEL_FOLDER = "folders/model"
EXPORT_FOLDER = "folders/export"
THEME = "view/theme"
GEOMETRY = "view/geometry"

THEMES = ("light", "dark")


class AppSettings:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else config_dir() / SETTINGS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._store = QSettings(str(self.path), QSettings.Format.IniFormat)

    def text(self, key: str, default: str = "") -> str:
        value = self._store.value(key, default)
        return value if isinstance(value, str) else default

    def set_text(self, key: str, value: str) -> None:
        self._store.setValue(key, value)

    def folder(self, key: str) -> str:
        """The last folder used for `key`, if it still exists."""
        folder = self.text(key)
        return folder if folder and Path(folder).is_dir() else str(Path.home())

    def remember_folder(self, key: str, path: str) -> None:
        target = Path(path)
        self.set_text(key, str(target if target.is_dir() else target.parent))

    @property
    def theme(self) -> str:
        theme = self.text(THEME, "light")
        return theme if theme in THEMES else "light"

    @theme.setter
    def theme(self, value: str) -> None:
        self.set_text(THEME, value)

    @property
    def geometry(self) -> QByteArray | None:
        value = self._store.value(GEOMETRY)
        return value if isinstance(value, QByteArray) else None

    @geometry.setter
    def geometry(self, value: QByteArray) -> None:
        self._store.setValue(GEOMETRY, value)

    def sync(self) -> None:
        self._store.sync()
