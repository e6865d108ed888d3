"""What a run will cost before it starts: its peak memory, estimated from the model's structure and the plan, and
its step time, measured on a few real steps. Decoders are where people hit their machine's limits; a run that will
not fit is refused with what to change, before anything big is allocated.

The memory estimate is deliberately simple and a little generous: float32 weights, the trainable values' gradient
and AdamW moments, the fixed projections, and the activations a backward pass keeps (per layer and token, about
18 hidden-size and 4 MLP-width values, plus the attention scores), which a backward through the frozen model needs
for every method but the linear head."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .. import methods
from ..formatting import format_bytes
from ..limits import memory_limit

FLOAT = 4  # bytes: training computes in float32 on the CPU
PER_TOKEN_HIDDEN, PER_TOKEN_MLP = 18, 4  # values kept per layer and token for the backward pass (measured order)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int  # bytes
    optimizer: int  # the trainable values' gradients and AdamW moments
    projections: int
    activations: int
    limit: int  # what one run may use on this machine (half its memory)

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.projections + self.activations

    @property
    def fits(self) -> bool:
        return self.total <= self.limit

    def describe(self) -> str:
        parts = ", ".join(f"{name} {format_bytes(value)}" for name, value in (
            ("weights", self.weights), ("activations", self.activations), ("projections", self.projections),
            ("optimizer", self.optimizer)) if value)
        return f"about {format_bytes(self.total)} at its peak ({parts}) of the {format_bytes(self.limit)} a run may use"


def estimate_memory(info, plan, batch_size: int, max_length: int, gradient_checkpointing: bool = False,
                    outputs_per_token: int = 0) -> MemoryEstimate:
    """Peak memory of training `plan` on a model described by `info` (models.ModelInfo); `outputs_per_token`, the
    width of a head that reads every token (`Task.outputs_per_token`: a language model's vocabulary), whose outputs,
    their float copy and their gradient are held at once."""
    weights = FLOAT * info.parameters
    optimizer = 3 * FLOAT * plan.trainable_params
    projections = methods.get_method(plan.method).fixed_memory(plan, info)
    activations = 0
    if plan.method_params:  # the gradient flows back through every layer
        tokens = batch_size * max_length
        per_layer = tokens * (PER_TOKEN_HIDDEN * info.hidden_size + PER_TOKEN_MLP * info.intermediate_size) \
            + batch_size * info.attention_heads * max_length ** 2
        layers = 1 if gradient_checkpointing else info.layers  # one layer's worth, recomputed in backward
        activations = FLOAT * per_layer * layers + FLOAT * tokens * info.hidden_size * info.layers
    activations += 3 * FLOAT * batch_size * max_length * outputs_per_token
    return MemoryEstimate(weights, optimizer, projections, activations, memory_limit())


def require_fits(estimate: MemoryEstimate, batch_size: int, plan, gradient_checkpointing: bool) -> None:
    """Refuse a run that will not fit, naming what to change."""
    from ..errors import UserError

    if estimate.fits:
        return
    advice = [f"a smaller batch (--batch-size {max(1, batch_size // 2)})"]
    if not gradient_checkpointing and estimate.activations:
        advice.append("gradient checkpointing (--gradient-checkpointing)")
    if estimate.projections and not plan.on_the_fly:
        advice.append("on-the-fly projections (--on-the-fly)")
    raise UserError(f"This run would take {estimate.describe()}; try {', or '.join(advice)}, or a shorter "
                    "--max-length.")


@dataclass(frozen=True)
class RunEstimate:
    memory: MemoryEstimate
    step_s: float  # median seconds of an optimizer step, measured
    steps_measured: int

    def describe(self) -> str:
        return f"{self.memory.describe()}; a step takes {self.step_s:.2f} s (median of {self.steps_measured} measured)"


def measure_run(config, steps: int = 3) -> RunEstimate:
    """The memory estimate and the step time of `config`, measured on its first batches of real data (`steps`
    steps after one that warms up) with a throwaway copy of the model: nothing is written."""
    import statistics

    import torch

    from ..build import build_model
    from .step import first_batches, sync
    from ..inference import pick_device
    from ..models import load_backbone
    from ..tasks import task_for
    from .step import Optimization

    training = config.training
    task = task_for(config.data.task, config.data.train)
    data = task.load_data(config.data, training.seed)
    loaded = load_backbone(config.model, task)
    model, method, plan = build_model(config.model, config.method, task, data.num_labels, loaded=loaded)
    encoder = task.make_encoder(loaded.tokenizer, config.data.max_length, model, config.data)
    memory = estimate_memory(model.info, plan, training.batch_size, encoder.max_length, training.gradient_checkpointing,
                             task.outputs_per_token(model))
    require_fits(memory, training.batch_size, plan, training.gradient_checkpointing)
    device = pick_device(training.device)
    model.to(device).train(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=method.default_lr_for(model.family))
    optimization = Optimization.create(model, optimizer, task.loss_function(data.problem), device,
                                       precision=training.precision)
    times = []
    for index, (inputs, labels) in enumerate(first_batches(task, encoder, data.train, training.batch_size,
                                                           steps + 1, device)):
        sync(device)
        tick = time.perf_counter()
        optimization.step(inputs, labels)
        sync(device)
        if index:  # the first step warms up
            times.append(time.perf_counter() - tick)
    return RunEstimate(memory, statistics.median(times), len(times))
