"""The vector file: the trained tensors (safetensors) with sorted JSON metadata (app version, method, task, base
model and its fingerprint, seed, projection spec, metrics, ε/δ) and checksums; reading it back checks all of it
before a model is rebuilt from it (`restore`)."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ... import __version__
from ..build import build_model
from ..config import MethodSpec, ModelSpec
from ..errors import ArtifactError
from ..models import JrftModel, load_backbone, weights_fingerprint
from ..paths import atomic_write, atomic_write_json
from ..projection import ProjectionCache, ProjectionSpec, check_spec, fingerprint

VECTOR_FORMAT = "jrft-vector/1"


METADATA_KEY = "jrft"


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def metadata_sha256(metadata: dict) -> str:
    """SHA-256 of the metadata's canonical JSON, leaving out this digest itself."""
    rest = {key: value for key, value in metadata.items() if key != "metadata_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def vector_metadata(*, model: JrftModel, plan, method_spec: MethodSpec, model_spec: ModelSpec, max_length: int,
                    problem: str, label_names, columns: dict, seed: int, metrics: dict) -> dict:
    """The metadata of a vector file. Its key `task` holds the data's `problem` ('classification', 'regression',
    ...), as files written before tasks had names hold it; `task_name` records the model's task."""
    projection = model.adaptation.projection
    projection_spec = projection.spec if projection is not None else None
    return {
        "format": VECTOR_FORMAT,
        "app_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": plan.method,
        "method_spec": method_spec.__dict__ | {"name": plan.method},
        "plan": plan.to_dict(),
        "base_model": {
            "id": model_spec.name_or_path, "family": model.info.family, "fingerprint": model.base_fingerprint,
        },
        "pooling": model.pooling,
        "max_length": max_length,
        "task": problem,  # the key keeps its first name, so that every vector file reads the same
        "task_name": model.task.name,
        "label_names": list(label_names) if label_names is not None else None,
        "columns": columns,
        "seed": seed,
        "projection": (
            {**projection_spec.to_dict(), "fingerprint": fingerprint(projection_spec)} if projection_spec else None
        ),
        "metrics": _finite(metrics),
        "torch_version": torch.__version__,
    }


def _finite(metrics: dict) -> dict:
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}


def save_vector(path: Path, model: JrftModel, metadata: dict) -> tuple[Path, Path]:
    """Write `<path>.safetensors` and `<path>.json` atomically; returns both paths."""
    from safetensors.torch import save_file

    from ..methods.base import trainable_state

    path = Path(path)
    tensors = trainable_state(model)
    tensors = {name: tensor.cpu() for name, tensor in tensors.items()}
    metadata = {**metadata, "tensors_sha256": tensors_sha256(tensors)}
    metadata["metadata_sha256"] = metadata_sha256(metadata)
    text = json.dumps(metadata, sort_keys=True, ensure_ascii=False)
    weights = atomic_write(path.with_suffix(".safetensors"),
                           lambda temp: save_file(tensors, str(temp), metadata={METADATA_KEY: text}))
    sidecar = atomic_write_json(path.with_suffix(".json"), metadata)
    return weights, sidecar


def read_vector(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a vector file, verified; every problem is an ArtifactError naming the check."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise ArtifactError(f"No vector file at {path}.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ArtifactError(f"{path.name} is not a safetensors vector file ({str(error).splitlines()[0]}); vectors "
                            "are read only as safetensors, never unpickled.") from None
    if METADATA_KEY not in header:
        raise ArtifactError(f"{path.name} is a safetensors file but not a JRFT vector (no metadata).")
    try:
        metadata = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict):
        raise ArtifactError(f"The metadata inside {path.name} is damaged.")
    if metadata.get("format") != VECTOR_FORMAT:
        raise ArtifactError(f"{path.name} has format {metadata.get('format')!r}; this app reads {VECTOR_FORMAT}.")
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            beside = json.loads(sidecar.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ArtifactError(f"{sidecar.name} is not valid JSON.") from None
        if beside != metadata:
            raise ArtifactError(
                f"{sidecar.name} does not match the metadata inside {path.name} (it was edited); "
                "the integrity check failed."
            )
    if metadata_sha256(metadata) != metadata.get("metadata_sha256"):
        raise ArtifactError(f"The metadata of {path.name} does not match its recorded SHA-256 (it was edited); "
                            "the integrity check failed.")
    if tensors_sha256(tensors) != metadata.get("tensors_sha256"):
        raise ArtifactError(f"The tensors in {path.name} do not match their recorded SHA-256 (they were changed).")
    return tensors, metadata


def check_base(metadata: dict, fingerprint: str, name: str) -> None:
    """Refuse a vector made on another base model than `name`, whose weights have `fingerprint`."""
    base = metadata["base_model"]
    if fingerprint != base["fingerprint"]:
        raise ArtifactError(
            f"This vector was trained on another base model ({base['id']}, fingerprint {base['fingerprint'][:12]}); "
            f"{name} has fingerprint {fingerprint[:12]}. Apply it to the model it was made for."
        )


def check_projection(metadata: dict, projections: ProjectionCache) -> None:
    """The projections a vector recorded, regenerated and checked against their fingerprint (once per spec)."""
    projection = metadata.get("projection")
    if projection:
        projections.check(ProjectionSpec.from_dict(projection), projection["fingerprint"])


@dataclass
class Restored:
    model: JrftModel
    method: object
    encoder: object  # the task's encoder: encode() and collate()
    tokenizer: object
    metadata: dict


def restore(path: Path, model_override: str | None = None, trust_remote_code: bool = False,
            base_dtype: str = "fp32") -> Restored:
    """Rebuild a trained model from its vector file on its base model (or an explicitly named copy of it), the base
    held in `base_dtype` ('fp32': predictions and merged models from the full-precision base; `jrft eval` replays
    the run's own, precision.replay_base). A run trained on a half-precision base recorded the fingerprint of its
    weights rounded to it, which an fp32 base is checked by too."""
    from ..methods.base import load_trainable_state
    from ..tasks import DEFAULT_TASK, get_task
    from ..train.precision import BASE_TORCH_DTYPES, keep_trainable_fp32

    tensors, metadata = read_vector(path)
    base = metadata["base_model"]
    model_spec = ModelSpec(name_or_path=model_override or base["id"], pooling=metadata["pooling"],
                           trust_remote_code=trust_remote_code)
    task = get_task(metadata.get("task_name", DEFAULT_TASK))
    loaded = load_backbone(model_spec, task, BASE_TORCH_DTYPES[base_dtype])
    recorded = metadata.get("base_dtype", "fp32")
    fingerprint = loaded.fingerprint if recorded == base_dtype else weights_fingerprint(
        loaded.model, BASE_TORCH_DTYPES.get(recorded, torch.float32))
    check_base(metadata, fingerprint, model_spec.name_or_path)
    spec = MethodSpec(**metadata["method_spec"])
    labels = metadata["label_names"]
    model, method, _ = build_model(model_spec, spec, task, len(labels) if labels else 1, loaded=loaded)
    projection = metadata.get("projection")
    if projection:
        check_spec(ProjectionSpec.from_dict(projection), projection["fingerprint"])
        if model.adaptation.projection.spec != ProjectionSpec.from_dict(projection):
            raise ArtifactError("The vector's projection spec does not match its method settings (edited metadata).")
    keep_trainable_fp32(model)
    load_trainable_state(model, tensors)
    model.eval()
    encoder = task.make_encoder(loaded.tokenizer, int(metadata["max_length"]), model)
    return Restored(model, method, encoder, loaded.tokenizer, metadata)
