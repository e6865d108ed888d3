"""What every page shares: a title, one sentence on what it is for, tooltips from the config help, notes."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QFrame, QLabel, QScrollArea, QVBoxLayout, QWidget

from ...core.config import field_bounds, field_help

INT_BOX_MAX = 2**31 - 1  # the most a QSpinBox holds (a C int)


class Page(QWidget):
    def __init__(self, title: str, intro: str, scrollable: bool = False, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = title
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 18, 24, 18)
        heading = QLabel(title)
        heading.setObjectName("pageTitle")
        outer.addWidget(heading)
        lead = QLabel(intro)
        lead.setObjectName("pageIntro")
        lead.setWordWrap(True)
        outer.addWidget(lead)
        content = QWidget()
        self.body = QVBoxLayout(content)
        self.body.setContentsMargins(0, 8, 0, 0)
        if scrollable:
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QFrame.Shape.NoFrame)
            scroll.setWidget(content)
            outer.addWidget(scroll, 1)
        else:
            outer.addWidget(content, 1)


def with_help(widget: QWidget, cls: type, name: str) -> QWidget:
    """Give `widget` the setting's explanation from the config dataclass as its tooltip."""
    widget.setToolTip(field_help(cls, name))
    return widget


def valid_range(box, cls: type, name: str, ceiling: float | None = None, special: str = ""):
    """Give a number box (QSpinBox, QDoubleSpinBox) the setting's valid range from the config's metadata, the same
    range `jrft train` checks; `ceiling` caps a range without a top (or a higher one); with `special`, one step
    below the range reads as that word (the setting left empty)."""
    step = 1 if not hasattr(box, "decimals") else 10 ** -box.decimals()
    low, high = field_bounds(cls, name, step, ceiling if ceiling is not None else INT_BOX_MAX)
    box.setRange(max(low - step if special else low, -INT_BOX_MAX), min(high, INT_BOX_MAX))
    if special:
        box.setSpecialValueText(special)
    return box


def compact_form(parent: QWidget | None = None) -> QFormLayout:
    """A form whose fields keep their natural width (a number box need not span the window)."""
    form = QFormLayout(parent)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
    return form


class Note(QLabel):
    """A line of feedback under a control: 'info', 'warning' or 'error' (styled by the theme)."""

    def __init__(self, text: str = "", kind: str = "info", parent: QWidget | None = None):
        super().__init__(text, parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.show_text(text, kind)

    def show_text(self, text: str, kind: str = "info") -> None:
        self.setText(text)
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.setVisible(bool(text))

    @property
    def kind(self) -> str:
        return self.property("kind")


def thousands(number: float | None) -> str:
    return "–" if number is None else f"{number:,}"
