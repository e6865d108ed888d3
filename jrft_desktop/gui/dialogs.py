"""Every dialog the app opens, behind small functions: tests and the self-test replace the file choosers and the
confirmation, and messages are non-modal (`open()`, not `exec()`), so nothing ever waits on a hidden dialog."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from ..core.events import FailedEvent


def show_error(parent: QWidget, message: str, details: str = "", title: str = "Something went wrong") -> QMessageBox:
    """The message first; the technical details (a traceback) behind 'Show Details...'."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, parent)
    if details:
        box.setDetailedText(details)
    box.setObjectName("errorDialog")
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()
    return box


def show_failure(parent: QWidget, failure: FailedEvent, what: str) -> QMessageBox:
    """A failed background task: a user error is explained by its message; anything else is a bug report."""
    if failure.user_error:
        return show_error(parent, failure.message, failure.details, title=f"Cannot {what}")
    return show_error(parent, f"An unexpected error stopped this ({what}):\n{failure.message}", failure.details,
                      title="Unexpected error")


def show_info(parent: QWidget, title: str, message: str) -> QMessageBox:
    box = QMessageBox(QMessageBox.Icon.Information, title, message, QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("infoDialog")
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()
    return box


def confirm(parent: QWidget, title: str, question: str) -> bool:
    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    answer = QMessageBox.question(parent, title, question, buttons, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def choose_open_file(parent: QWidget, title: str, folder: str, filters: str) -> str:
    return QFileDialog.getOpenFileName(parent, title, folder, filters)[0]


def choose_save_file(parent: QWidget, title: str, suggested: str, filters: str) -> str:
    return QFileDialog.getSaveFileName(parent, title, suggested, filters)[0]


def choose_folder(parent: QWidget, title: str, folder: str) -> str:
    return QFileDialog.getExistingDirectory(parent, title, folder)
