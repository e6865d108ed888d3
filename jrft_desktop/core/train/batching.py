"""Batches in a seeded order (grouped by length), the number of steps a run takes, how often it evaluates, and the
learning-rate schedule. All of it depends only on (seed, step), so a resumed run takes the steps an uninterrupted
one would have taken."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from ..config import DEFAULT_PATIENCE, MIN_CEILING_STEPS, TrainingSpec

MEGA_BATCH = 50  # batches per length-sorted group when batches are grouped by length (as the HF Trainer's)


@dataclass
class Batches:
    """Tokenised examples, batched in a seeded order that depends only on (seed, epoch).

    Grouped by length (TrainingSpec.group_by_length), an epoch is the HF Trainer's `group_by_length` order with the
    batches shuffled too: a random permutation cut into groups of MEGA_BATCH steps, each group sorted by length and
    cut into steps (`accumulation` batches each), and those steps in a random order (a short last step stays last,
    so that steps keep their batches together). Every example is still in exactly one batch of an epoch, and far
    fewer padding tokens are computed."""

    rows: list[dict]
    labels: Sequence  # each row's example's labels, as the task holds them; the task's encoder collates a batch's
    batch_size: int
    seed: int
    lengths: Sequence[int] | None = None  # each row's padded length (Task.row_lengths); None: all alike
    group_by_length: bool = False
    accumulation: int = 1  # batches per optimizer step: a step's batches come from one length group

    def __post_init__(self):
        self.per_epoch = math.ceil(len(self.rows) / self.batch_size)
        self._order: tuple[int, list[list[int]]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The examples of every batch of one epoch, in order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.rows), generator=generator).tolist()
        size = self.batch_size
        if not self.group_by_length or self.lengths is None:
            return [order[start:start + size] for start in range(0, len(order), size)]
        step = size * self.accumulation
        steps = []
        for start in range(0, len(order), step * MEGA_BATCH):
            group = sorted(order[start:start + step * MEGA_BATCH], key=self.lengths.__getitem__, reverse=True)
            steps += [group[first:first + step] for first in range(0, len(group), step)]
        short = [steps.pop()] if steps and len(steps[-1]) < step else []
        steps = [steps[i] for i in torch.randperm(len(steps), generator=generator).tolist()] + short
        return [picked[first:first + size] for picked in steps for first in range(0, len(picked), size)]

    def indices(self, index: int) -> list[int]:
        """The examples of batch `index` (counted across epochs)."""
        epoch, within = divmod(index, self.per_epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, self.epoch_batches(epoch))
        return self._order[1][within]

    def padded_share(self, epoch: int = 0) -> float | None:
        """The share of padding among the tokens that one epoch's batches compute (None without lengths)."""
        if self.lengths is None or not self.rows:
            return None
        batches = self.epoch_batches(epoch)
        computed = sum(len(batch) * max(self.lengths[i] for i in batch) for batch in batches)
        return 1 - sum(self.lengths) / computed

    def batch(self, index: int, encoder) -> tuple[dict, torch.Tensor]:
        return self.gather(self.indices(index), encoder)

    def gather(self, picked: Sequence[int], encoder) -> tuple[dict, torch.Tensor]:
        rows = [self.rows[i] for i in picked]
        return encoder.collate(rows), encoder.collate_labels(rows, [self.labels[i] for i in picked])


# A run that converges plans its ceiling (config.MIN_CEILING_STEPS, TrainingSpec.max_epochs). A private run given
# neither epochs nor steps trains PRIVATE_EPOCHS instead: its noise is calibrated to the steps it plans, so a longer
# ceiling would add noise to every step.
PRIVATE_EPOCHS = 3


def converges(training: TrainingSpec, private: bool = False) -> bool:
    """Whether a run stops at convergence (neither epochs nor steps given), so its planned steps are a ceiling."""
    return training.max_steps is None and training.epochs is None and not private


def fitted_batch(training: TrainingSpec, train_examples: int) -> TrainingSpec:
    """The settings with the batch lowered to the training examples where it is larger (a small file trains)."""
    if training.batch_size <= train_examples:
        return training
    return replace(training, batch_size=max(1, train_examples))


def planned_steps(train_examples: int, training: TrainingSpec, private: bool = False) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps) of a run on this many training examples; a run that converges
    (`converges`) plans its ceiling."""
    training = fitted_batch(training, train_examples)
    steps_per_epoch = math.ceil(math.ceil(train_examples / training.batch_size) / training.gradient_accumulation)
    if training.max_steps:
        return steps_per_epoch, training.max_steps
    if training.epochs or private:
        return steps_per_epoch, max(1, math.ceil((training.epochs or PRIVATE_EPOCHS) * steps_per_epoch))
    return steps_per_epoch, max(MIN_CEILING_STEPS, math.ceil(training.max_epochs * steps_per_epoch))


def patience(training: TrainingSpec, private: bool = False) -> int | None:
    """Evaluations without improvement that end the run: the setting, or DEFAULT_PATIENCE for a run that
    converges; None trains all its planned steps."""
    return training.early_stopping_patience or (DEFAULT_PATIENCE if converges(training, private) else None)


# Scoring a validation row costs about half of training on one example (a forward pass against a forward and a
# backward: 0.35-0.5 measured on SST-2 and AG News). Evaluating no more often than once per EVAL_SPACING validation
# sets' worth of training examples keeps evaluation under a tenth of the training time when the validation set is
# the default held-out tenth of the file; MIN_EVALUATIONS keeps a curve and a best checkpoint to pick from when it
# is larger than that.
EVAL_SPACING = 6


MIN_EVALUATIONS = 4


def default_eval_every(total_steps: int, validation_examples: int, training: TrainingSpec) -> int:
    """Steps between evaluations when the user set none: ten times a run, less often for a large validation set,
    but at least MIN_EVALUATIONS times."""
    examples_per_step = training.batch_size * training.gradient_accumulation
    spaced = math.ceil(EVAL_SPACING * validation_examples / examples_per_step)
    # Rounded up, so that the last interval ends on the last step (always evaluated) instead of just before it.
    return max(1, min(max(math.ceil(total_steps / 10), spaced), math.ceil(total_steps / MIN_EVALUATIONS)))


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))


@dataclass(frozen=True)
class Schedule:
    """How many steps, the learning rate at each, and when to evaluate and save."""

    total_steps: int  # a ceiling when `converges`
    steps_per_epoch: int
    warmup: int
    lr: float
    kind: str  # TrainingSpec.schedule
    eval_every: int
    checkpoint_every: int
    patience: int | None = None  # evaluations without improvement that stop the run (None: never)
    converges: bool = False  # the run trains until it converges, at most total_steps

    @classmethod
    def plan(cls, training: TrainingSpec, train_examples: int, default_lr: float,
             validation_examples: int, private: bool = False) -> Schedule:
        training = fitted_batch(training, train_examples)
        steps_per_epoch, total = planned_steps(train_examples, training, private)
        eval_every = training.eval_every or default_eval_every(total, validation_examples, training)
        return cls(total, steps_per_epoch, int(round(training.warmup_ratio * total)),
                   training.lr if training.lr is not None else default_lr, training.schedule, eval_every,
                   training.checkpoint_every or eval_every, patience(training, private), converges(training, private))

    def describe_length(self) -> str:
        """How long the run trains, in words: its steps, or its ceiling and what stops it before."""
        epochs = f"{self.total_steps / self.steps_per_epoch:.3g} epochs"
        if not self.converges:
            return f"{self.total_steps:,} steps ({epochs})"
        return (f"until the validation metric stops improving ({self.patience} evaluations without a better one, "
                f"one every {self.eval_every:,} steps), at most {self.total_steps:,} steps ({epochs})")

    def lr_at(self, step: int) -> float:
        return self.lr * lr_factor(step, self.total_steps, self.warmup, self.kind)
