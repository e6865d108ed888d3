"""One optimisation step (`Optimization`: forward under the run's precision, backward, update), shared by the
trainer, the cost estimate's step timer and the bench; and the first batches of a data set for timing steps."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..models import attention_implementation
from ..tasks import Task
from . import precision as precisions


def autocast_for(device: torch.device, precision: str = "auto"):
    """The autocast of `precision` (TrainingSpec.precision, or a resolved 'fp16') on `device`: bf16 where the
    device has it natively (or fp16 with a GradScaler on an older CUDA GPU); None for fp32 (precision.py)."""
    resolved = precision if precision == "fp16" else precisions.resolve(precision, device)
    return precisions.autocast(resolved, device)


def _full(outputs):
    """Outputs computed under autocast, in fp32 for the loss."""
    return outputs.float() if isinstance(outputs, torch.Tensor) and outputs.is_floating_point() else outputs


@dataclass
class Optimization:
    """One optimizer step's work: forward under the device's precision, the task's loss, backward, the update.

    The trainer calls `backward` once per micro-batch and `update` once per step; the bench times `step`."""

    model: nn.Module  # what the batches go through (wrapped for data-parallel training)
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    autocast: torch.autocast | None = None
    scaler: torch.amp.GradScaler | None = None
    # the attention kernel the forward pass runs with, whose backward the step then takes (precision.py)
    attention: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    # the labels go into the forward pass, which returns the loss's sums (`Task.sums_in_forward`: a language model's
    # loss over only the tokens it counts, in chunks)
    sums_in_forward: bool = False

    @classmethod
    def create(cls, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn, device: torch.device,
               full_precision: bool = False, precision: str = "auto") -> Optimization:
        autocast = None if full_precision else autocast_for(device, precision)
        fast = getattr(autocast, "fast_dtype", None)
        computes_in = "bf16" if fast == torch.bfloat16 else "fp16" if fast == torch.float16 else "fp32"
        scaler = torch.amp.GradScaler("cuda") if computes_in == "fp16" else None
        jrft_model = getattr(model, "module", model)  # under DistributedDataParallel, the model it wraps
        base = jrft_model.base()
        kernel = precisions.training_attention(computes_in, device, jrft_model.info.causal)
        sums = bool(getattr(jrft_model.task, "sums_in_forward", False))
        if kernel is None or base.config._attn_implementation != "sdpa":  # measured against the fused kernel only
            return cls(model, optimizer, loss_fn, autocast, scaler, sums_in_forward=sums)
        return cls(model, optimizer, loss_fn, autocast, scaler, lambda: attention_implementation(base, kernel), sums)

    def backward(self, inputs: dict, labels: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
        """Accumulate the gradient of `weight` x the batch's mean loss; returns that mean loss (detached)."""
        with self.attention(), self.autocast or contextlib.nullcontext():
            outputs = self.model(**inputs, targets=labels) if self.sums_in_forward else self.model(**inputs)
        mean_loss = self.loss_fn(_full(outputs), labels)
        loss = mean_loss * weight
        with self.attention():  # a checkpointed layer recomputes its forward pass in backward: the same kernel
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        return mean_loss.detach()

    def update(self) -> None:
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, inputs: dict, labels: torch.Tensor) -> float:
        """One whole step on one batch; returns its mean loss."""
        loss = self.backward(inputs, labels)
        self.update()
        return float(loss)


def train_mode(model: nn.Module, dropout: bool) -> None:
    """`model.train(dropout)`, with the layers that recompute their activations (gradient checkpointing) marked as
    training even when dropout is off: transformers checkpoints a layer only in training mode, so without this
    `--gradient-checkpointing` kept every activation. Their submodules, dropout included, stay as `dropout` says."""
    model.train(dropout)
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False) is True:
            module.training = True


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_batches(task: Task, encoder, examples, batch_size: int, count: int,
                  device: torch.device) -> list[tuple[dict, torch.Tensor]]:
    """The first `count` batches of the given examples (cycled when there are fewer)."""
    rows, _ = task.encode(encoder, examples)
    batches = []
    for index in range(count):
        picked = [(index * batch_size + k) % len(rows) for k in range(batch_size)]
        batch = [rows[i] for i in picked]
        inputs = {key: value.to(device) for key, value in encoder.collate(batch).items()}
        batches.append((inputs, encoder.collate_labels(batch, [examples.labels[i] for i in picked]).to(device)))
    return batches
