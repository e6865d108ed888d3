"""Peak memory of one case, in a fresh process per case (forked from a server that has only imported the engine),
since a process's peak RSS never goes down and would otherwise carry the previous case's peak. On CUDA the same
child reports torch.cuda.max_memory_allocated."""

from __future__ import annotations

import multiprocessing

import torch

from ..tasks import task_for
from ..train.step import first_batches
from .cases import BenchSettings
from .timing import prepare_case


# --- memory: one fresh process per case ------------------------------------------------------------------------------
def measure_memory(job: dict) -> dict:
    """Runs in a child process: load, apply the method, train a few steps; the peak before and during training."""
    from ..inference import peak_memory_mb

    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    settings: BenchSettings = job["settings"]
    prepared = prepare_case(settings, job["method"], job["num_labels"], job["problem"], device)
    batches = first_batches(task_for(settings.data.task, settings.data.train), prepared.encoder, job["examples"],
                            settings.batch_size, settings.memory_steps, device)
    loaded = peak_memory_mb(device)
    for inputs, labels in batches:
        prepared.optimization.step(inputs, labels)
    peak = peak_memory_mb(device)
    return {"peak_memory_mb": peak, "training_memory_mb": max(0.0, peak - loaded)}


# Imported once in the forkserver rather than in every child (peft alone takes seconds).
PRELOADED = ("transformers.models.auto.modeling_auto", "transformers.models.auto.tokenization_auto", "peft")


def memory_context():
    """A forkserver that has imported this module (so torch): each child starts from the same small state at once,
    without paying the imports again. Where there is no fork (Windows), a fresh interpreter per case."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, *PRELOADED])
        return context
    return multiprocessing.get_context("spawn")
