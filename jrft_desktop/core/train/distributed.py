"""Data-parallel training across the processes that `torchrun` or `accelerate launch` started.

The launcher owns the processes and sets WORLD_SIZE, RANK and LOCAL_RANK; here the trainer only joins them
(torch.distributed, gloo on CPU, NCCL on CUDA) and splits every logical batch between them, so `--batch-size`
stays the global batch and a run's result does not depend on the number of processes. Rank 0 is the one writer:
it alone takes the run lock, writes checkpoints and artifacts, and reports progress."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from ..errors import UserError

Item = TypeVar("Item")


@dataclass(frozen=True)
class Processes:
    """This process's place among the launched ones (one process, rank 0 of 1, when not launched that way)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    @property
    def writer(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[Item]) -> list[Item]:
        """This process's contiguous part of `items`; the parts differ in length by at most one and, joined in
        rank order, give `items` back."""
        size, extra = divmod(len(items), self.world_size)
        start = self.rank * size + min(self.rank, extra)
        return list(items[start:start + size + (self.rank < extra)])

    # --- collectives (each is a no-op for one process) ----------------------------------------------------------
    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over all processes (float64, so a sum of losses stays exact enough to compare)."""
        if not self.parallel:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)  # on the CPU: gloo carries it
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, rows: np.ndarray | list) -> np.ndarray | list:
        """Every process's rows (an array's, or a list's items), concatenated in rank order (the inverse of
        `share`)."""
        if not self.parallel:
            return rows
        parts: list = [None] * self.world_size
        torch.distributed.all_gather_object(parts, rows)
        return np.concatenate(parts) if isinstance(rows, np.ndarray) else [row for part in parts for row in part]

    def from_writer(self, value):
        """The writer's `value` in every process (a small JSON-able object: a config, an error message)."""
        if not self.parallel:
            return value
        box = [value if self.writer else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.parallel:
            torch.distributed.barrier()


def from_environment() -> Processes:
    """The launcher's variables (torchrun, accelerate launch, or a cluster's); one process without them."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserError("WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers; launch data-parallel training "
                        "with torchrun or accelerate launch.") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"RANK {rank} does not fit WORLD_SIZE {world_size}; launch data-parallel training with "
                        "torchrun or accelerate launch.")
    return Processes(world_size, rank, local_rank)


def join(processes: Processes) -> bool:
    """Join the launched processes' group (once per process); True when this call created it. Gloo carries CPU
    tensors and the small control messages, NCCL the gradients of a run on GPUs."""
    if not processes.parallel or torch.distributed.is_initialized():
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(processes.local_rank % torch.cuda.device_count())
        torch.distributed.init_process_group(backend="cpu:gloo,cuda:nccl")
    else:
        torch.distributed.init_process_group(backend="gloo")
    return True


def leave() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def device_for(processes: Processes, device: torch.device) -> torch.device:
    """Each process of a multi-GPU run takes the GPU of its local rank."""
    if processes.parallel and device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())  # set by `join`
    return device


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model wrapped by PyTorch's DistributedDataParallel, which averages the gradients of its trainable
    parameters across the processes during backward (and starts every process from rank 0's weights)."""
    from torch.nn.parallel import DistributedDataParallel

    # The buffers (fixed projections, position ids) are equal everywhere by construction: no need to resend them.
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)
