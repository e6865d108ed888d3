"""Between OpenAI's requests and the generate task: chat messages as the task's turns, and an answer's text as its
tokens arrive, cut at the first stop string (text that could still begin one is held back until it cannot)."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.tasks.generate import TextStream
from .errors import APIError
from .schemas import ChatMessage

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
TEXT_PARTS = ("text", "input_text")


def turns_of(messages: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    """(role, text) of each message, as the generate task renders conversations with the run's chat template."""
    turns = []
    for index, message in enumerate(messages):
        role = ROLES.get(message.role)
        if role is None:
            raise APIError(400, f"messages[{index}] has role {message.role!r}; this server takes system, developer, "
                                "user and assistant messages (no tool calls).", param=f"messages.{index}.role")
        turns.append((role, _content(message, index)))
    if all(role == "system" for role, _ in turns):
        raise APIError(400, "The messages need a user message to answer.", param="messages")
    return turns


def _content(message: ChatMessage, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.type not in TEXT_PARTS or part.text is None:
            raise APIError(400, f"messages[{index}] holds a {part.type!r} part; this server reads text only.",
                           param=f"messages.{index}.content")
        parts.append(part.text)
    return "\n".join(parts)


class Answer:
    """One answer's text so far (`text`), cut at the first of `stops`; `add` gives what can be sent now."""

    def __init__(self, tokenizer, stops: Sequence[str]):
        self.stream = TextStream(tokenizer)
        self.stops = list(stops)
        self.text = ""
        self.sent = 0
        self.stopped = False

    def add(self, ids: Sequence[int], final: bool = False) -> str:
        """The text that the answer's tokens `ids` release (all of it when `final`); sets `stopped` when a stop
        string appears, the answer then ending just before it."""
        if self.stopped:
            return ""
        self.text += self.stream.added(ids, final)
        looked_from = max(0, self.sent - max(map(len, self.stops), default=0))
        found = [at for at in (self.text.find(stop, looked_from) for stop in self.stops) if at >= 0]
        if found:
            self.text, self.stopped = self.text[:min(found)], True
            return self._release(len(self.text))
        return self._release(len(self.text) if final else len(self.text) - self._could_begin_a_stop())

    def _could_begin_a_stop(self) -> int:
        """The length of the longest end of the text that a stop string starts with."""
        longest = min(len(self.text), max(map(len, self.stops), default=1) - 1)
        return next((size for size in range(longest, 0, -1)
                     if any(stop.startswith(self.text[-size:]) for stop in self.stops)), 0)

    def _release(self, end: int) -> str:
        if end <= self.sent:
            return ""
        piece, self.sent = self.text[self.sent:end], end
        return piece
