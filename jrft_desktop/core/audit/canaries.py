"""Canaries for the audit: generated examples a run trains with on request (`Privacy.audit_canaries`), each included
independently with probability ½ from the run's recorded seed, so that the audit can tell afterwards how well the
model betrays which ones it saw (the one-run lower bound on ε, `statistics.one_run_audit`).

The task makes them (`Task.make_canaries`: random labels on words of the data, or a random secret in a fixed
template); this module draws which train, mixes those into the training rows and records the set in the run folder
(canaries.json: the seed, the count and a fingerprint, never the canaries; nothing of them goes into a vector file or
an export). The validation data never holds canaries, so the metrics a run reports are on the user's data alone."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError
from ..paths import atomic_write_json

CANARIES_FILE = "canaries.json"
# The canaries' random streams, apart from everything else the run's seed draws
EXAMPLES_STREAM, INCLUSION_STREAM = 0xCA7A, 0xCA7B
SECRET_DIGITS = 6  # a generated secret: this many random digits (10^6 possible secrets)
WORDS_PER_CANARY = (6, 12)  # the shortest and longest canary, in words


@dataclass(frozen=True)
class CanarySet:
    """A run's canaries (the task's examples, with labels), their token rows, and which of them train."""

    examples: Any
    rows: list[dict]
    included: np.ndarray  # bool, one per canary
    seed: int

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the canaries as generated: the audit regenerates them and checks they are the same."""
        return hashlib.sha256(repr(self.examples).encode()).hexdigest()

    def record(self) -> dict:
        return {"count": len(self), "included": int(self.included.sum()), "seed": self.seed,
                "fingerprint": self.fingerprint}

    def mixed_into(self, rows: list[dict], labels: Sequence) -> tuple[list[dict], list]:
        """The training rows and their labels with the included canaries after them."""
        picked = np.flatnonzero(self.included).tolist()
        return [*rows, *(self.rows[i] for i in picked)], [*labels, *(self.examples.labels[i] for i in picked)]

    def note(self) -> str:
        return (f"audit canaries: {int(self.included.sum())} of {len(self)} generated canaries train with the data "
                f"(each with probability ½, seed {self.seed}); `jrft audit` measures what the model gives away about "
                "them; the validation scores are on your data alone")


def make_canary_set(task, data, encoder, count: int, seed: int) -> CanarySet:
    """`count` canaries from the task, encoded, each included with probability ½ (both draws seeded by `seed`)."""
    examples = task.make_canaries(data, count, np.random.default_rng([seed, EXAMPLES_STREAM]))
    rows, _ = task.encode(encoder, examples)
    return CanarySet(examples, rows, inclusion(count, seed), seed)


def inclusion(count: int, seed: int) -> np.ndarray:
    """Which of `count` canaries train: each independently with probability ½, drawn from the run's seed (known
    before any canary is made: the noise preview counts them)."""
    return np.random.default_rng([seed, INCLUSION_STREAM]).random(count) < 0.5


def write_record(run_dir: Path, canaries: CanarySet) -> Path:
    return atomic_write_json(Path(run_dir) / CANARIES_FILE, canaries.record())


def read_record(run_dir: Path) -> dict | None:
    """The canaries a run trained with (canaries.json), None for a run without canaries."""
    path = Path(run_dir) / CANARIES_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ArtifactError(f"{path} is damaged; the run's canaries cannot be audited.") from None
    return record


# --- what tasks build their canaries from ------------------------------------------------------------------------
def vocabulary(texts: Sequence[str]) -> list[str]:
    """The distinct words of the texts, in a fixed order (canaries look like the data, word by word)."""
    return sorted({word for text in texts for word in str(text).split()}) or ["canary"]


def random_sentences(words: Sequence[str], count: int, rng: np.random.Generator) -> list[list[str]]:
    """`count` random word sequences: real words in an order no text has, easy to tell apart and to memorise."""
    shortest, longest = WORDS_PER_CANARY
    return [[words[i] for i in rng.integers(0, len(words), size=int(rng.integers(shortest, longest + 1)))]
            for _ in range(count)]


def random_secret(rng: np.random.Generator) -> str:
    """A secret of SECRET_DIGITS random digits, spaced so that every tokenizer sees one digit at a time."""
    return " ".join(str(digit) for digit in rng.integers(0, 10, size=SECRET_DIGITS))


SECRET_BITS = SECRET_DIGITS * float(np.log2(10))  # log2 of the number of possible secrets
