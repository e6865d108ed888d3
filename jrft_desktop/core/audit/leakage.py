"""The audit of a finished run (`jrft audit RUN`, the Results page's "Check privacy"), on the run's own data and
without retraining: the trained model restored from its vector file scores

- as many of its training examples as held-out (validation) examples, each by its own loss (a generated answer's
  mean log-likelihood): the membership attack's ROC AUC and its true-positive rate at 1 % false positives. A run with
  a privacy unit column (`--privacy-unit`) is attacked per unit, as its ε is stated: one seeded row of each trained
  unit against one of each held-out unit, and a unit with rows on both sides of the split is left out (its held-out
  rows are not unseen: the model trained on its other rows). Where the held-out rows do not name their unit (a
  separate validation file, a classify split), every held-out row counts as a unit of its own, and audit.json says
  so;
- the run's canaries, when it trained with them: the one-run lower bound on ε (95 % confidence) beside the
  accountant's ε, and for canaries with a secret (generate) its exposure among other secrets.

The findings go to audit.json in the run folder, with a plain-words reading, and into the privacy report."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import runs
from ..config import RunConfig
from ..errors import ArtifactError, UserError
from ..export.vector import restore
from ..inference import pick_device
from ..paths import atomic_write_json
from ..privacy_report import audit_reading, write_report
from ..train import precision as precisions
from ..train.privacy import PrivacyUnits, default_delta
from . import statistics
from .canaries import CanarySet, make_canary_set, read_record

MEMBERSHIP_STREAM = 0xA0D1  # the seeded choice of the examples scored, apart from the run's other draws
MAX_MEMBERSHIP_ROWS = 2000  # training examples scored (and as many held-out ones): the AUC to about ±0.01
EXPOSURE_CANARIES = 32  # canaries of each kind (trained, not trained) whose secret is ranked
EXPOSURE_CANDIDATES = 32  # other secrets each one is ranked among
CHUNK = 64  # rows scored between two progress reports


@dataclass(frozen=True)
class AuditProgress:
    """How far an audit is: rows scored of all it will score, and what it is doing."""

    done: int
    total: int
    message: str


class AuditStopped(UserError):
    """The audit was asked to stop (nothing was written)."""


class _Scorer:
    """The restored model's per-example scores (the negative loss: higher means more likely trained on), reported
    chunk by chunk."""

    def __init__(self, restored, encoder, problem: str, device: torch.device, total: int,
                 on_progress: Callable[[AuditProgress], None] | None, stop_event: threading.Event | None):
        self.task, self.model, self.encoder, self.problem = restored.model.task, restored.model, encoder, problem
        # in the precision the run was trained and scored in, where this device computes it (`jrft eval` likewise)
        self.precision = precisions.replay(restored.metadata.get("precision", "fp32"), device)
        self.device, self.total, self.done = device, total, 0
        self.on_progress, self.stop_event = on_progress, stop_event

    def report(self, message: str) -> None:
        if self.stop_event is not None and self.stop_event.is_set():
            raise AuditStopped("The privacy check was stopped; nothing was written.")
        if self.on_progress is not None:
            self.on_progress(AuditProgress(self.done, self.total, message))

    def scores(self, examples, message: str) -> np.ndarray:
        """The examples' scores, in their order; computed shortest first (batches of similar length pad little)."""
        rows, _ = self.task.encode(self.encoder, examples)
        order = np.argsort(self.task.row_lengths(rows), kind="stable")
        found = np.zeros(len(rows))
        for start in range(0, len(rows), CHUNK):
            self.report(message)
            picked = order[start:start + CHUNK]
            found[picked] = -self.task.example_losses(self.model, self.encoder, [rows[i] for i in picked],
                                                      [examples.labels[i] for i in picked], self.problem,
                                                      self.device, self.precision)
            self.done += len(picked)
        return found


def audit_run(run_dir: Path | str, device: str = "auto", on_progress: Callable[[AuditProgress], None] | None = None,
              stop_event: threading.Event | None = None) -> dict:
    """Audit the finished run in `run_dir`; writes audit.json and the privacy report, returns what audit.json holds.
    `on_progress` gets an AuditProgress before every chunk of rows; `stop_event` set stops it (AuditStopped)."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    metrics, config = _finished_run(run_dir)
    record = read_record(run_dir)
    if on_progress is not None:
        on_progress(AuditProgress(0, 1, "Loading the trained model"))
    restored = restore(run_dir / runs.VECTOR_FILE)
    task, torch_device = restored.model.task, pick_device(device)
    restored.model.to(torch_device)
    data = task.load_data(config.data, config.training.seed)  # the split the run trained and validated on
    encoder = task.make_encoder(restored.tokenizer, config.data.max_length, restored.model, config.data)
    members, non_members, grouping = _membership_examples(data, config.training.seed, config.data.privacy_unit)
    canaries = _regenerate(task, data, encoder, record) if record is not None else None
    total = 2 * len(members) + (_canary_rows(task, canaries) if canaries is not None else 0)
    scorer = _Scorer(restored, encoder, data.problem, torch_device, total, on_progress, stop_event)
    inside = scorer.scores(members, "Scoring training examples")
    outside = scorer.scores(non_members, "Scoring held-out examples")
    audit: dict = {"mia_auc": statistics.roc_auc(inside, outside),
                   "mia_tpr_at_1pct_fpr": statistics.tpr_at_fpr(inside, outside, statistics.LOW_FPR),
                   "membership": {"members": len(inside), "non_members": len(outside), **grouping,
                                  "score": "the negative loss of each example (a generated answer's mean "
                                           "log-likelihood)"}}
    privacy = metrics.get("privacy")
    if canaries is not None:
        delta = privacy["delta"] if privacy else default_delta(int(metrics["train_examples"]))
        audit.update(_canary_findings(scorer, canaries, delta))
    if privacy:
        audit["epsilon"] = privacy["epsilon_spent"]
    scorer.report("Writing the findings")
    audit.update(audit_time_s=time.perf_counter() - started, train_time_s=metrics.get("train_time_s"))
    audit["reading"] = audit_reading(audit)
    atomic_write_json(run_dir / runs.AUDIT_FILE, audit)
    write_report(run_dir, privacy, f"{metrics.get('method', config.method.name)} on {Path(config.data.train).name}",
                 audit)
    return audit


def _finished_run(run_dir: Path) -> tuple[dict, RunConfig]:
    """(metrics.json, the run's config) of a finished run, or a UserError saying why it cannot be audited."""
    summary = runs.summarize_run(run_dir)
    if summary is None:
        raise ArtifactError(f"{run_dir} holds no run (no readable {runs.CONFIG_FILE}).")
    if not summary.has_vector or not (run_dir / runs.METRICS_FILE).is_file():
        raise ArtifactError(f"The run in {run_dir} has not finished (no {runs.VECTOR_FILE}); finish or resume it "
                            "first, then audit it.")
    config = RunConfig.from_json((run_dir / runs.CONFIG_FILE).read_text(encoding="utf-8"))
    return summary.metrics, config


def _membership_examples(data, seed: int, unit: str | None):
    """(members, non-members, how they were drawn): a seeded sample of the training examples and as many validation
    examples; with a privacy unit, one row of each unit (see the module's note)."""
    rng = np.random.default_rng([seed, MEMBERSHIP_STREAM])
    if unit and data.train.units:
        inside, outside, grouping = _one_row_per_unit(data, unit, rng)
    else:
        inside, outside, grouping = np.arange(len(data.train)), np.arange(len(data.validation)), {}
    count = min(len(inside), len(outside), MAX_MEMBERSHIP_ROWS)
    if count < 1:
        raise UserError("The run has no validation examples to compare its training examples with"
                        + (f" (no held-out row belongs to a '{unit}' that did not also train)." if unit else "."))
    picked = (np.sort(rng.choice(rows, size=count, replace=False)).tolist() for rows in (inside, outside))
    return data.train.select(next(picked)), data.validation.select(next(picked)), grouping


def _one_row_per_unit(data, unit: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """(training rows, validation rows, their record): a seeded row of each training unit, and of each validation
    unit that never trained; every validation row when they do not name their unit."""
    trained = PrivacyUnits.of(unit, data.train.units, 1).rows
    inside = np.array([rows[rng.integers(len(rows))] for rows in trained], dtype=int)
    grouping = {"privacy_unit": unit, "member_units": len(trained)}
    if not data.validation.units:
        return inside, np.arange(len(data.validation)), {
            **grouping, "non_member_units": "unknown: the held-out rows do not name their unit, each counts as one"}
    names = set(data.train.units)
    held_out = PrivacyUnits.of(unit, data.validation.units, 1).rows
    unseen = [rows for rows in held_out if data.validation.units[rows[0]] not in names]
    outside = np.array([rows[rng.integers(len(rows))] for rows in unseen], dtype=int)
    return inside, outside, {**grouping, "non_member_units": len(unseen),
                             "units_on_both_sides": len(held_out) - len(unseen)}


def _regenerate(task, data, encoder, record: dict) -> CanarySet:
    """The run's canaries, made again from its record; refused when they come out different (the data changed)."""
    canaries = make_canary_set(task, data, encoder, int(record["count"]), int(record["seed"]))
    if canaries.fingerprint != record.get("fingerprint"):
        raise ArtifactError("The run's canaries cannot be made again as they were trained: its training data changed "
                            "since it trained. Audit it with the data it was trained on.")
    return canaries


def _canary_rows(task, canaries: CanarySet) -> int:
    """How many rows scoring the canaries takes (with their exposure's candidates where they hold secrets)."""
    if task.canary_candidates(canaries.examples, 0, 1, np.random.default_rng(0)) is None:
        return len(canaries)
    trained = int(canaries.included.sum())
    ranked = min(trained, EXPOSURE_CANARIES) + min(len(canaries) - trained, EXPOSURE_CANARIES)
    return len(canaries) + ranked * EXPOSURE_CANDIDATES


def _canary_findings(scorer: _Scorer, canaries: CanarySet, delta: float) -> dict:
    """The one-run lower bound from the canaries' scores, and their secrets' exposure where they hold one."""
    scores = scorer.scores(canaries.examples, "Scoring the canaries")
    one_run = statistics.one_run_audit(scores, canaries.included, delta)
    found: dict = {"epsilon_lower_bound": one_run.epsilon_lower_bound, "one_run": one_run.to_dict()}
    exposure = _exposure(scorer, canaries, scores)
    if exposure is not None:
        found["canary_exposure"] = exposure
    return found


def _exposure(scorer: _Scorer, canaries: CanarySet, scores: np.ndarray) -> dict | None:
    """The exposure of the secrets of the first EXPOSURE_CANARIES trained canaries, and of as many that did not
    train (what exposure looks like without memorisation); None when the canaries hold no secret. A canary whose
    other secrets all score as its own has its secret cut off by the maximum length: it is counted, not ranked."""
    rng = np.random.default_rng([canaries.seed, MEMBERSHIP_STREAM])
    found: dict[bool, list[float]] = {True: [], False: []}
    bits, cut_off = 0.0, 0
    for trained in (True, False):
        for index in np.flatnonzero(canaries.included == trained)[:EXPOSURE_CANARIES].tolist():
            candidates = scorer.task.canary_candidates(canaries.examples, index, EXPOSURE_CANDIDATES, rng)
            if candidates is None:
                return None
            others, bits = candidates
            other_scores = scorer.scores(others, "Ranking the canaries' secrets")
            if np.all(other_scores == scores[index]):
                cut_off += 1
                continue
            found[trained].append(statistics.exposure(float(scores[index]), other_scores, bits))
    return {"mean": float(np.mean(found[True])) if found[True] else None,
            "max": float(np.max(found[True])) if found[True] else None, "bits": bits,
            "canaries": len(found[True]), "candidates": EXPOSURE_CANDIDATES, "cut_off": cut_off,
            "untrained_mean": float(np.mean(found[False])) if found[False] else None}
