"""Predicting and scoring with a model in hand: the device to run on, batched logits in input order, metrics.

The trainer, `jrft eval` / `jrft predict`, the desktop app and the bench all go through here."""

from __future__ import annotations

import resource
import sys
from collections.abc import Sequence

import numpy as np
import torch

from . import distributed, metrics
from .errors import UserError
from .models import Encoder, JrftModel


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UserError(f"Unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA was requested but no CUDA GPU is available here; use --device cpu or auto.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"There is no {requested}; this machine has {torch.cuda.device_count()} CUDA device(s).")
    return device


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


@torch.no_grad()
def predict_logits(model: JrftModel, encoder: Encoder, rows: Sequence[dict], device: torch.device,
                   batch_size: int = 64) -> np.ndarray:
    model.eval()
    width = model.head.out_features
    logits = np.zeros((len(rows), width), dtype=np.float32)
    # Batches of similar length pad far less (dev sets mix short and long sentences); results go back in order.
    order = sorted(range(len(rows)), key=lambda index: len(rows[index]["input_ids"]))
    for start in range(0, len(order), batch_size):
        picked = order[start:start + batch_size]
        inputs = {k: v.to(device) for k, v in encoder.collate([rows[i] for i in picked]).items()}
        logits[picked] = model(**inputs).float().cpu().numpy()
    return logits


def evaluate(model: JrftModel, encoder: Encoder, rows: Sequence[dict], labels: np.ndarray, task: str,
             device: torch.device, processes: distributed.Processes = distributed.Processes()) -> dict[str, float]:
    """Metrics on the labelled rows; the processes of a data-parallel run each score their part."""
    logits = processes.gather(predict_logits(model, encoder, processes.share(rows), device))
    return metrics.compute(task, labels, logits)
