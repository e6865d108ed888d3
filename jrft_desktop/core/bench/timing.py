"""Speed, measured fairly on a shared machine: step times in interleaved rounds (a few steps of each case in turn),
the floating-point operations of one step, this machine's matrix-multiply peak, and interleaved inference latency."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .. import methods
from ..build import build_model
from ..config import MethodSpec
from ..models import load_backbone
from ..tasks import task_for
from ..train.step import Optimization, autocast_for, sync
from .cases import BenchSettings
from .results import Reporter


# --- one training step, shared by the timing, the FLOP count and the memory child -----------------------------------
@dataclass
class PreparedCase:
    model: torch.nn.Module
    plan: methods.MethodPlan
    optimization: Optimization  # the trainer's own step: precision, loss, backward, update
    encoder: object  # the task's encoder: encode() and collate()


def prepare_case(settings: BenchSettings, spec: MethodSpec, num_labels: int, problem: str,
                 device: torch.device) -> PreparedCase:
    """A case's model with its method applied and the trainer's step for it, without dropout (as training)."""
    task = task_for(settings.data.task, settings.data.train)
    loaded = load_backbone(settings.model, task)
    model, _, plan = build_model(settings.model, spec, task, num_labels, loaded=loaded)
    model.to(device).train(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=plan.default_lr)
    optimization = Optimization.create(model, optimizer, task.loss_function(problem), device)
    return PreparedCase(model, plan, optimization, task.make_encoder(loaded.tokenizer, settings.data.max_length, model))


@dataclass
class StepTimes:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # process CPU seconds (all its threads)


def interleaved_step_times(prepared: dict[str, PreparedCase], batches: Sequence[tuple[dict, torch.Tensor]],
                           device: torch.device, rounds: int,
                           on_round: Callable[[int], None] | None = None) -> dict[str, StepTimes]:
    """Wall-clock and CPU seconds per training step of every case, measured round-robin: each round runs every case
    on the same batches; round 0 warms up and is not counted. On a shared machine the CPU time moves less with the
    other programs' load than the wall time does (with one torch thread it hardly moves at all)."""
    times = {label: StepTimes() for label in prepared}
    for round_index in range(rounds + 1):
        for label, case in prepared.items():
            for inputs, labels in batches:
                sync(device)
                tick, cpu_tick = time.perf_counter(), time.process_time()
                case.optimization.step(inputs, labels)
                sync(device)
                if round_index:
                    times[label].wall.append(time.perf_counter() - tick)
                    times[label].cpu.append(time.process_time() - cpu_tick)
        if on_round is not None:
            on_round(round_index)
    return times


def step_flops(case: PreparedCase, inputs: dict, labels: torch.Tensor) -> float:
    """Floating-point operations of one training step (matrix products and attention; elementwise work is not
    counted, as usual)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        case.optimization.step(inputs, labels)
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, size: int, repeats: int = 5) -> float:
    """The best FLOP/s of a square matrix product here, in the dtype training computes in."""
    autocast = autocast_for(device)
    dtype = autocast.fast_dtype if autocast is not None else torch.float32
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    best = math.inf
    for index in range(repeats + 1):
        sync(device)
        tick = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        if index:  # the first product warms up
            best = min(best, time.perf_counter() - tick)
    return 2 * size**3 / best


def interleaved_latency(variants: dict[str, torch.nn.Module], batches: list[dict], device: torch.device,
                         rounds: int, reporter: Reporter) -> dict[str, float]:
    """Median seconds per inference batch of every variant, measured round-robin (round 0 warms up)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        for round_index in range(rounds + 1):
            reporter.check()
            for name, model in variants.items():
                model.eval()
                for inputs in batches:
                    sync(device)
                    tick = time.perf_counter()
                    model(**inputs)
                    sync(device)
                    if round_index:
                        times[name].append(time.perf_counter() - tick)
            reporter.say(f"latency: round {round_index}/{rounds} done")
    return {name: statistics.median(values) for name, values in times.items()}
