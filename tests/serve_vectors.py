"""For the server's tests: tiny vector files (a method applied to a tiny model, its trained values drawn at random,
large enough that every vector answers differently, saved as a finished run's vector file would be), and the
server's /metrics read as numbers."""

from __future__ import annotations

from pathlib import Path

import httpx
import torch

from jrft_desktop.core.build import build_model
from jrft_desktop.core.config import MethodSpec, ModelSpec
from jrft_desktop.core.export.vector import save_vector, vector_metadata
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.tasks import get_task

PROBLEMS = {"classify": "classification", "tag": "tagging", "generate": "generation"}
COLUMNS = {"classify": {"text": "sentence", "text_pair": None, "label": "label"},
           "tag": {"text": "tokens", "text_pair": None, "label": "tags"},
           "generate": {"text": "instruction", "text_pair": None, "label": "output", "layout": "alpaca"}}


def make_vector(model: Path, run_dir: Path, task: str, method: str = "slash", labels=None, seed: int = 0,
                scale: float = 3.0, max_length: int = 64, metrics=None, **options) -> Path:
    """A run folder holding vector.safetensors / vector.json for `method` on `model`."""
    spec = ModelSpec(name_or_path=str(model))
    chosen = get_task(task)
    method_spec = MethodSpec(name=method, **options)
    built = build_model(spec, method_spec, chosen, len(labels) if labels else 1, loaded=load_backbone(spec, chosen))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in built.model.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    metadata = vector_metadata(model=built.model, plan=built.plan, method_spec=built.plan.resolved(method_spec),
                               model_spec=spec, max_length=max_length, problem=PROBLEMS[task], label_names=labels,
                               columns=COLUMNS[task], seed=seed, metrics=metrics or {"accuracy": 0.5})
    run_dir.mkdir(parents=True, exist_ok=True)
    save_vector(run_dir / "vector", built.model, metadata)
    return run_dir


def metric_values(url: str, key: str | None = None) -> dict[str, float]:
    """Every sample of the server's /metrics, by its name and labels."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def mean_per_batch(values: dict[str, float], name: str, before: dict[str, float] | None = None) -> float:
    """The mean of a batch histogram (`jrft_decode_batch_rows`, ...), over the batches since `before`."""
    def since(key: str) -> float:
        return values[key] - (before or {}).get(key, 0.0)

    return since(f"{name}_sum") / max(since(f"{name}_count"), 1)
