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


@dataclass(frozen=True)
class StepEvent:
    step: int
    total_steps: int
    epoch: float
    loss: float
    lr: float
    step_time_s: float
    examples_per_s: float
    eta_s: float
    epsilon: float | None = None  # privacy budget ε spent so far (private runs only)


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
    """The run ended: `status` is 'completed', 'early-stopped' or 'stopped' (resumable)."""

    status: str
    run_dir: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class FailedEvent:
    message: str
    details: str
    user_error: bool


TrainerEvent = PreparedEvent | StepEvent | EvalEvent | CheckpointEvent | FinishedEvent | FailedEvent
Callback = Callable[[TrainerEvent], None]
