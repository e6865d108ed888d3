"""A generate run in the app: the chat box of its Results page (answers stream in token by token, the conversation is
kept, the base model's answer can stand beside the tuned one) and the samples view (the fixed validation prompts
answered greedily at each evaluation, on the Train and Results pages).

Generation runs on the thread pool (`worker.run_in_background`); the text it produces comes back through a QObject's
signal, which Qt queues to the UI thread, so the window never waits for the model."""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from ..core.config import Decoding
from . import dialogs
from .backend import ChatAnswer, TrainedModel
from .pages.base import Note, valid_range, with_help
from .worker import run_in_background

TUNED, BASE = "tuned", "base"
USER, ASSISTANT = "user", "assistant"  # the roles of a conversation's turns
MAX_NEW_TOKENS_BOX = 4096  # the most the box offers (Decoding sets no top)
PENALTY_BOX = 2.0  # the strongest repetition penalty the box offers (1.1 to 1.3 is usual)
TEMPERATURE_BOX = 5.0
BUBBLE_STYLE = {  # readable in both themes: translucent colours over the window's own
    USER: "background: rgba(61, 123, 217, 0.16); border-radius: 8px; padding: 8px;",
    TUNED: "background: rgba(46, 125, 50, 0.14); border-radius: 8px; padding: 8px;",
    BASE: "background: rgba(128, 128, 128, 0.14); border-radius: 8px; padding: 8px;",
}


@dataclass(eq=False)
class Exchange:
    """One question and its answers: the text streamed so far and the final answer of each side."""

    question: str
    streamed: dict[str, str] = field(default_factory=dict)
    answers: dict[str, ChatAnswer] = field(default_factory=dict)
    bubbles: dict[str, QLabel] = field(default_factory=dict)


class _Relay(QObject):
    """Lives in the UI thread; `text` emitted from the generating thread is queued back to it."""

    text = Signal(object, str, str)  # the exchange, the side (tuned / base), new text


def _bubble(text: str, kind: str, title: str) -> tuple[QFrame, QLabel]:
    frame = QFrame()
    frame.setObjectName(f"chat_{kind}")
    frame.setStyleSheet(f"QFrame#chat_{kind} {{ {BUBBLE_STYLE[kind]} }}")
    box = QVBoxLayout(frame)
    box.setContentsMargins(8, 6, 8, 6)
    box.setSpacing(2)
    heading = QLabel(title)
    heading.setObjectName("detail")
    box.addWidget(heading)
    body = QLabel(text)
    body.setObjectName(f"chatText_{kind}")
    body.setTextFormat(Qt.TextFormat.PlainText)
    body.setWordWrap(True)
    body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    body.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    box.addWidget(body)
    box.addStretch(1)  # side by side, the shorter answer keeps to the top of its bubble
    return frame, body


def decoding_box(cls_name: str, box, ceiling: float | None = None):
    """A number box for one of config.Decoding's settings: its help as the tooltip, its range from the metadata."""
    valid_range(with_help(box, Decoding, cls_name), Decoding, cls_name, ceiling)
    box.setValue(getattr(Decoding(), cls_name))
    return box


class ChatBox(QWidget):
    """Type, press Enter (or Send): the tuned model's answer streams in; the conversation so far goes with every new
    question. *Compare with the base model* answers each question with the base model too, beside it."""

    busy_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.trained: TrainedModel | None = None
        self.method = ""
        self.exchanges: list[Exchange] = []
        self.turns: list[tuple[str, str]] = []  # the tuned model's conversation
        self.base_turns: list[tuple[str, str]] = []  # the same questions with the base model's answers
        self.stop_event = threading.Event()
        self._busy = False
        self._serial = 0  # a new chat (or run) makes the answers still in flight stale
        self._relay = _Relay(self)
        self._relay.text.connect(self._stream)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._build_settings_row())
        layout.addWidget(self._build_transcript(), 1)
        layout.addLayout(self._build_entry_row())
        self.status = Note()
        layout.addWidget(self.status)

        self.send_button.clicked.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.clear_button.clicked.connect(self.clear)
        self.set_model(None, "", "Loading the trained model…")

    def _build_settings_row(self) -> QHBoxLayout:
        """Compare with the base model, and the decoding settings."""
        settings = QHBoxLayout()
        self.compare_check = QCheckBox("Compare with the base model")
        self.compare_check.setToolTip("Answer each question with the base model as well (the same model with no "
                                      "method applied), beside the tuned answer. The first time loads the base model.")
        settings.addWidget(self.compare_check)
        settings.addStretch(1)
        self.max_tokens_spin = decoding_box("max_new_tokens", QSpinBox(), MAX_NEW_TOKENS_BOX)
        self.temperature_spin = QDoubleSpinBox()
        self.temperature_spin.setDecimals(2)
        self.temperature_spin.setSingleStep(0.1)
        decoding_box("temperature", self.temperature_spin, TEMPERATURE_BOX)
        self.top_p_spin = QDoubleSpinBox()
        self.top_p_spin.setDecimals(2)
        self.top_p_spin.setSingleStep(0.05)
        decoding_box("top_p", self.top_p_spin)
        self.penalty_spin = QDoubleSpinBox()
        self.penalty_spin.setDecimals(2)
        self.penalty_spin.setSingleStep(0.05)
        decoding_box("repetition_penalty", self.penalty_spin, PENALTY_BOX)
        for label, box in (("Max new tokens", self.max_tokens_spin), ("Temperature", self.temperature_spin),
                           ("Top-p", self.top_p_spin), ("Repetition penalty", self.penalty_spin)):
            caption = QLabel(label)
            caption.setToolTip(box.toolTip())
            settings.addWidget(caption)
            settings.addWidget(box)
        self.greedy_check = QCheckBox("Greedy")
        self.greedy_check.setToolTip("The likeliest token every time, nothing else: temperature 0 and no repetition "
                                     "penalty (a small model may then repeat itself). Unchecked: the defaults again.")
        self.greedy_check.toggled.connect(self._greedy_toggled)
        settings.addWidget(self.greedy_check)
        self.temperature_spin.valueChanged.connect(self._show_sampling)
        return settings

    def _build_transcript(self) -> QScrollArea:
        """The conversation, scrolled to the newest text; a placeholder line while there is none."""
        self.scroll = QScrollArea()
        self.scroll.setObjectName("chatTranscript")
        self.scroll.setWidgetResizable(True)
        transcript = QWidget()
        self.transcript = QVBoxLayout(transcript)
        self.transcript.setContentsMargins(4, 4, 4, 4)
        self.transcript.addStretch(1)
        self.scroll.setWidget(transcript)
        self.scroll.verticalScrollBar().rangeChanged.connect(
            lambda _low, high: self.scroll.verticalScrollBar().setValue(high))  # follow the newest text
        self.placeholder = QLabel("")
        self.placeholder.setObjectName("detail")
        self.placeholder.setWordWrap(True)
        self.transcript.insertWidget(0, self.placeholder)
        return self.scroll

    def _build_entry_row(self) -> QHBoxLayout:
        """The message box, with Send, Stop and New chat beside it."""
        entry = QHBoxLayout()
        self.input = QPlainTextEdit()
        self.input.setObjectName("chatInput")
        self.input.setPlaceholderText("Type a message; Enter sends it, Shift+Enter starts a new line")
        self.input.setFixedHeight(58)
        self.input.installEventFilter(self)
        entry.addWidget(self.input, 1)
        buttons = QVBoxLayout()
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("primary")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("End the answer now; what was generated so far stays.")
        self.clear_button = QPushButton("New chat")
        self.clear_button.setToolTip("Forget the conversation; the next message starts a new one.")
        for button in (self.send_button, self.stop_button, self.clear_button):
            buttons.addWidget(button)
        entry.addLayout(buttons)
        return entry

    # --- the model ----------------------------------------------------------------------------------------
    def set_model(self, trained: TrainedModel | None, method: str = "", waiting: str = "") -> None:
        """The run to chat with (None: none yet, `waiting` says why); a new one starts a new conversation."""
        self.stop()
        self.trained, self.method = trained, method
        self.clear()
        self.placeholder.setText(waiting if trained is None else
                                 "Ask the tuned model something. Each message goes with the conversation so far; "
                                 "greedy answers (temperature 0) are the same every time.")
        self._show_controls()

    @property
    def busy(self) -> bool:
        return self._busy

    def options(self) -> Decoding:
        return Decoding(max_new_tokens=self.max_tokens_spin.value(), temperature=self.temperature_spin.value(),
                        top_p=self.top_p_spin.value(), repetition_penalty=self.penalty_spin.value())

    # --- talking ------------------------------------------------------------------------------------------
    def eventFilter(self, watched, event) -> bool:
        if watched is self.input and event.type() == event.Type.KeyPress and \
                event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and \
                not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.send()
            return True
        return super().eventFilter(watched, event)

    def send(self, text: str | None = None) -> None:
        """Ask `text` (or what the box holds) after the conversation so far."""
        text = (self.input.toPlainText() if text is None else text).strip()
        if not text or self.trained is None or self._busy:
            return
        self.input.clear()
        compare = self.compare_check.isChecked()
        exchange = Exchange(text)
        self.exchanges.append(exchange)
        self._add_exchange(exchange, compare)
        self.turns.append((USER, text))
        self.base_turns.append((USER, text))
        self.stop_event = threading.Event()
        self._set_busy(True)
        self.status.show_text("Loading the base model and answering…" if compare and len(self.exchanges) == 1
                              else "")
        serial = self._serial
        run_in_background(self, _converse, self.trained, tuple(self.turns), tuple(self.base_turns), compare,
                          self.options(), self.stop_event, self._relay, exchange,
                          on_result=lambda answers: serial == self._serial and self._answered(exchange, answers),
                          on_error=lambda failure: serial == self._serial and self._failed(failure))

    def stop(self) -> None:
        """End the answer being generated after its current token."""
        self.stop_event.set()

    def clear(self) -> None:
        """A new conversation; an answer still being generated stops and is dropped."""
        if self._busy:
            self.stop()
            self._set_busy(False)
        self._serial += 1
        self.exchanges, self.turns, self.base_turns = [], [], []
        while self.transcript.count() > 2:  # the placeholder and the stretch stay
            item = self.transcript.takeAt(1)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.placeholder.show()
        self.status.show_text("")

    def _add_exchange(self, exchange: Exchange, compare: bool) -> None:
        self.placeholder.hide()
        question, _ = _bubble(exchange.question, USER, "You")
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(question, 3)
        holder = QWidget()
        holder.setLayout(row)
        answers = QWidget()
        line = QHBoxLayout(answers)
        line.setContentsMargins(0, 0, 0, 0)
        sides = ((TUNED, f"Tuned model ({self.method})" if self.method else "Tuned model"),) + \
            (((BASE, "Base model (no method applied)"),) if compare else ())
        for side, title in sides:
            frame, body = _bubble("…", side, title)
            exchange.bubbles[side] = body
            exchange.streamed[side] = ""
            line.addWidget(frame, 1)
        if not compare:
            line.addStretch(1)
        at = self.transcript.count() - 1  # above the stretch
        self.transcript.insertWidget(at, holder)
        self.transcript.insertWidget(at + 1, answers)

    def _stream(self, exchange: Exchange, side: str, text: str) -> None:
        if not any(shown is exchange for shown in self.exchanges):  # a chat cleared meanwhile
            return
        exchange.streamed[side] = exchange.streamed.get(side, "") + text
        bubble = exchange.bubbles.get(side)
        if bubble is not None:
            bubble.setText(exchange.streamed[side])

    def _answered(self, exchange: Exchange, answers: dict[str, ChatAnswer]) -> None:
        for side, answer in answers.items():
            exchange.answers[side] = answer
            exchange.bubbles[side].setText(answer.text + (" [stopped]" if answer.stopped else "") or "(no answer)")
        tuned = answers[TUNED]
        self.turns.append((ASSISTANT, tuned.text))
        self.base_turns.append((ASSISTANT, answers[BASE].text if BASE in answers else tuned.text))
        self.status.show_text("Stopped: the answer so far is kept in the conversation."
                              if any(answer.stopped for answer in answers.values()) else "")
        self._set_busy(False)

    def _failed(self, failure) -> None:
        if self.turns and self.turns[-1][0] == USER:  # the question without an answer leaves the conversation
            self.turns.pop()
            self.base_turns.pop()
        if self.exchanges:
            for bubble in self.exchanges[-1].bubbles.values():
                bubble.setText("(no answer)")
        self.status.show_text(failure.message, "error")
        self._set_busy(False)
        if not failure.user_error:
            dialogs.show_failure(self, failure, "answer")

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self._show_controls()
        self.busy_changed.emit(busy)
        if not busy:
            QTimer.singleShot(0, self.input.setFocus)

    def _show_controls(self) -> None:
        ready = self.trained is not None
        self.send_button.setEnabled(ready and not self._busy)
        self.input.setEnabled(ready)
        self.stop_button.setEnabled(self._busy)
        self.clear_button.setEnabled(ready and not self._busy)
        self.compare_check.setEnabled(ready and not self._busy)
        self._show_sampling()

    def _show_sampling(self) -> None:
        greedy = self.greedy_check.isChecked()
        self.top_p_spin.setEnabled(self.temperature_spin.value() > 0 and not greedy)
        self.temperature_spin.setEnabled(not greedy)
        self.penalty_spin.setEnabled(not greedy)

    def _greedy_toggled(self, greedy: bool) -> None:
        """Greedy sets temperature 0 and no repetition penalty; unchecked, the defaults come back."""
        defaults = Decoding()
        self.temperature_spin.setValue(0.0 if greedy else defaults.temperature)
        self.penalty_spin.setValue(1.0 if greedy else defaults.repetition_penalty)
        self._show_sampling()


def _converse(trained: TrainedModel, turns, base_turns, compare: bool, options: Decoding, stop: threading.Event,
              relay: _Relay, exchange: Exchange) -> dict[str, ChatAnswer]:
    """On a pool thread: the tuned model's answer, then the base model's (when compared), streamed through `relay`."""
    def streamer(side: str):
        def on_text(text: str) -> None:
            try:
                relay.text.emit(exchange, side, text)
            except RuntimeError:  # the window closed meanwhile
                stop.set()
        return on_text

    answers = {TUNED: trained.answer(turns, options, streamer(TUNED), stop)}
    if compare and not stop.is_set():
        answers[BASE] = trained.answer(base_turns, options, streamer(BASE), stop, base=True)
    return answers


# --- the samples view -------------------------------------------------------------------------------------------
class SamplesView(QTextBrowser):
    """The validation prompts a generate run answers greedily at each evaluation: each prompt, the answer it was
    given, then the model's answer at every evaluation so far, so the changes read top to bottom."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("samples")
        self.setOpenLinks(False)
        self.evaluations: list[tuple[int, list[dict]]] = []
        self.clear_samples()

    def clear_samples(self) -> None:
        self.evaluations = []
        self.setHtml("<p style='color:gray'>A generate run answers a few validation prompts greedily at every "
                     "evaluation; their answers show here as training goes.</p>")

    def set_samples(self, evaluations) -> None:
        self.evaluations = [(int(step), list(samples)) for step, samples in evaluations]
        self._render()

    def add(self, step: int, samples) -> None:
        self.evaluations = [entry for entry in self.evaluations if entry[0] != step] + [(int(step), list(samples))]
        self._render()

    def _render(self) -> None:
        if not self.evaluations:
            self.clear_samples()
            return
        bar = self.verticalScrollBar()
        kept = bar.value()
        prompts: dict[str, tuple[str, list[tuple[int, str]]]] = {}
        for step, samples in self.evaluations:
            for sample in samples:
                entry = prompts.setdefault(sample["prompt"], (sample.get("expected", ""), []))
                entry[1].append((step, sample.get("generated", "")))
        parts = []
        for number, (prompt, (expected, answers)) in enumerate(prompts.items(), start=1):
            rows = "".join(
                f"<tr><td style='color:gray; padding-right:8px' nowrap>step {step:,}</td>"
                f"<td>{_text(answer) or EMPTY}</td></tr>" for step, answer in answers)
            parts.append(f"<p style='margin-bottom:2px'><b>{number}. {_text(prompt)}</b></p>"
                         f"<table cellspacing='2'><tr><td style='color:gray; padding-right:8px' nowrap>expected</td>"
                         f"<td style='color:gray'>{_text(expected)}</td></tr>{rows}</table>")
        lead = (f"<p style='color:gray'>The first {len(prompts)} validation prompts, answered greedily at each of "
                f"{len(self.evaluations)} evaluations (the run's history.json keeps them), under the answer the "
                "data gives.</p>")
        self.setHtml(lead + "<hr>".join(parts))
        bar.setValue(kept)


EMPTY = "<i style='color:gray'>(empty)</i>"


def _text(text: str) -> str:
    return html.escape(text.strip()).replace("\n", "<br>")
