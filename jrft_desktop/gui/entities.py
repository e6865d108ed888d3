"""Token data and entities as the pages show them: words with their tags, entities highlighted in a sentence, and
the per-type scores, each entity type in its own colour (the same on every page for the same tag set)."""

from __future__ import annotations

import html
from collections.abc import Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

# Light backgrounds that keep dark text readable, in both themes
PALETTE = ("#ffd8a8", "#b2f2bb", "#a5d8ff", "#fcc2d7", "#d0bfff", "#ffec99", "#99e9f2", "#e9ecef", "#c0eb75",
           "#eebefa")
OUTSIDE = "O"


def entity_type(tag: str) -> str | None:
    """The entity type of a BIO / IOBES tag ('B-person' -> 'person'); None for O."""
    return None if tag == OUTSIDE else tag[2:]


def entity_types(tags: Sequence[str]) -> tuple[str, ...]:
    """The entity types of a tag set, sorted: the order that gives each its colour."""
    return tuple(sorted({kind for kind in map(entity_type, tags) if kind}))


def run_types(per_type: dict, tags: Sequence[str] = ()) -> tuple[str, ...]:
    """A run's entity types in colour order: those scored on its validation data, then any other of its tags'."""
    scored = tuple(sorted(per_type))
    return scored + tuple(kind for kind in entity_types(tags) if kind not in scored)


def colour(kind: str, kinds: Sequence[str]) -> str:
    return PALETTE[list(kinds).index(kind) % len(PALETTE)] if kind in kinds else PALETTE[-1]


def _chip(text: str, kind: str, kinds: Sequence[str], label: str) -> str:
    return (f"<span style='background-color:{colour(kind, kinds)}; color:#1a1a1a'>&nbsp;{html.escape(text)}"
            f"<sub style='font-size:small'>&nbsp;{html.escape(label)}</sub>&nbsp;</span>")


def tagged_html(sentences: Sequence[Sequence[tuple[str, str]]], limit: int = 40) -> str:
    """Sentences of (word, tag): words outside any entity plain, the others in their type's colour with their tag."""
    kinds = entity_types([tag for sentence in sentences for _, tag in sentence])
    paragraphs = []
    for sentence in sentences[:limit]:
        words = [html.escape(word) if entity_type(tag) is None else _chip(word, entity_type(tag), kinds, tag)
                 for word, tag in sentence]
        paragraphs.append(f"<p style='line-height:160%'>{' '.join(words)}</p>")
    return "".join(paragraphs)


def highlighted_html(text: str, entities: Sequence[dict], kinds: Sequence[str]) -> str:
    """`text` with each entity (its character offsets) in its type's colour, labelled with the type and score."""
    pieces, at = [], 0
    for entity in sorted(entities, key=lambda found: found["start"]):
        pieces.append(html.escape(text[at:entity["start"]]))
        pieces.append(_chip(text[entity["start"]:entity["end"]], entity["type"], kinds,
                            f"{entity['type']} {entity['score']:.2f}"))
        at = entity["end"]
    pieces.append(html.escape(text[at:]))
    return f"<p style='line-height:180%'>{''.join(pieces)}</p>"


def legend_html(kinds: Sequence[str]) -> str:
    return " ".join(_chip(kind, kind, kinds, "") for kind in kinds)


def per_type_table(per_type: dict[str, dict], kinds: Sequence[str]) -> QTableWidget:
    """Precision, recall, F1 and support of every entity type, each row in its type's colour."""
    table = QTableWidget(len(per_type), 5)
    table.setObjectName("perType")
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.setHorizontalHeaderLabels(["Entity type", "Precision", "Recall", "F1", "Support"])
    table.verticalHeader().hide()
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    for row, (kind, scores) in enumerate(sorted(per_type.items())):
        values = (kind, f"{scores['precision']:.3f}", f"{scores['recall']:.3f}", f"{scores['f1']:.3f}",
                  f"{scores['support']:,}")
        for column, value in enumerate(values):
            item = QTableWidgetItem(value)
            if column:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            else:
                item.setBackground(QColor(colour(kind, kinds)))
                item.setForeground(QColor("#1a1a1a"))
            table.setItem(row, column, item)
    return table
