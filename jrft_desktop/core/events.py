"""What the trainer reports, as frozen dataclasses handed to callbacks (the Qt worker turns them into signals)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PreparedEvent:
    """Data and model are loaded; training is about to start."""

    total_steps: int
    start_step: int
    train_examples: int
    validation_examples: int
    plan: Mapping
    notes: tuple[str, ...] = ()
    privacy: Mapping | None = None  # the PrivacyPlan of a private run (σ, δ, q, target ε, ...)
    ceiling: bool = False  # total_steps is a ceiling: the run stops when its validation metric stops improving
    length: str = ""  # how long it trains, in words (batching.Schedule.describe_length)


@dataclass(frozen=True)
class StepEvent:
    step: int
    total_steps: int
    epoch: float
    loss: float
    lr: float
    step_time_s: float
    examples_per_s: float
    eta_s: float  # to total_steps: the ceiling's, when `ceiling`
    epsilon: float | None = None  # privacy budget ε spent so far (private runs only)
    ceiling: bool = False  # total_steps is a ceiling (PreparedEvent.ceiling)
    eta_if_flat_s: float | None = None  # to the stop early stopping makes if no evaluation improves any more (None
    # while the last one improved, or without early stopping)


@dataclass(frozen=True)
class EvalEvent:
    step: int
    metrics: Mapping[str, float]
    metric_name: str
    is_best: bool


@dataclass(frozen=True)
class CheckpointEvent:
    step: int
    path: str


@dataclass(frozen=True)
class FinishedEvent:
    """The run ended: `status` is 'completed', 'early-stopped' or 'stopped' (resumable); `reason` says why, in a
    sentence."""

    status: str
    run_dir: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class FailedEvent:
    message: str
    details: str
    user_error: bool


TrainerEvent = PreparedEvent | StepEvent | EvalEvent | CheckpointEvent | FinishedEvent | FailedEvent
Callback = Callable[[TrainerEvent], None]
