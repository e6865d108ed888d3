"""Vector files (the trained parameters plus metadata) and merged stock models.

A vector is `<name>.safetensors` holding the trainable tensors, with the metadata embedded in its header and
repeated, sorted, in `<name>.json` beside it. Files are only ever read with safetensors and JSON (never
unpickled); loading checks the metadata's and the tensors' SHA-256, the base model's fingerprint and the projection
fingerprint, and says which check failed."""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__
from .config import MethodSpec, ModelSpec
from .errors import ArtifactError
from .models import JrftModel, load_backbone
from .paths import atomic_directory, atomic_write, atomic_write_json
from .projection import ProjectionSpec, check_spec, fingerprint

VECTOR_FORMAT = "jrft-vector/1"
METADATA_KEY = "jrft"
MANIFEST_NAME = "jrft_manifest.json"


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
                    task: str, label_names, columns: dict, seed: int, metrics: dict) -> dict:
    """`task` is the data's problem ('classification' or 'regression'); `task_name` records the model's task."""
    projection_spec = getattr(getattr(model, "projected", None), "spec", None)
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
        "task": task,
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

    from .methods.base import trainable_state

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


@dataclass
class Restored:
    model: JrftModel
    method: object
    encoder: object  # the task's encoder: encode() and collate()
    tokenizer: object
    metadata: dict


def restore(path: Path, model_override: str | None = None, trust_remote_code: bool = False) -> Restored:
    """Rebuild a trained model from its vector file on its base model (or an explicitly named copy of it)."""
    from . import methods
    from .methods.base import load_trainable_state
    from .tasks import DEFAULT_TASK, get_task

    tensors, metadata = read_vector(path)
    base = metadata["base_model"]
    model_spec = ModelSpec(name_or_path=model_override or base["id"], trust_remote_code=trust_remote_code)
    task = get_task(metadata.get("task_name", DEFAULT_TASK))
    loaded = load_backbone(model_spec, task)
    if loaded.fingerprint != base["fingerprint"]:
        raise ArtifactError(
            f"This vector was trained on another base model ({base['id']}, fingerprint {base['fingerprint'][:12]}); "
            f"{model_spec.name_or_path} has fingerprint {loaded.fingerprint[:12]}. Apply it to the model it was "
            "made for."
        )
    spec = MethodSpec(**metadata["method_spec"])
    labels = metadata["label_names"]
    model, method, _ = methods.build(loaded, metadata["pooling"], len(labels) if labels else 1, spec, task)
    projection = metadata.get("projection")
    if projection:
        check_spec(ProjectionSpec.from_dict(projection), projection["fingerprint"])
        if model.projected.spec != ProjectionSpec.from_dict(projection):
            raise ArtifactError("The vector's projection spec does not match its method settings (edited metadata).")
    load_trainable_state(model, tensors)
    model.eval()
    encoder = task.make_encoder(loaded.tokenizer, int(metadata["max_length"]), model)
    return Restored(model, method, encoder, loaded.tokenizer, metadata)


def check_target(out_dir: Path) -> Path:
    """The folder an export goes to: a new or empty one, or an earlier export (which the new one replaces)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / MANIFEST_NAME).is_file() and (
            not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ArtifactError(f"{out_dir} already exists and is not an earlier merged export; choose a new or empty "
                            "folder for the merged model.")
    return out_dir


def merged_copy(model: JrftModel, method) -> tuple[JrftModel, torch.nn.Module]:
    """A CPU copy of the trained model with the method folded into its weights (its forward still gives the run's
    outputs, now with no hooks or adapters), and the plain transformers model inside it."""
    work = copy.deepcopy(model).cpu()
    base = method.merge(work)
    work.eval()
    return work, base


def max_tokens(model: JrftModel, metadata: dict) -> int:
    """The run's input length in tokens, special tokens included, lowered to the model's positions as training
    lowered it."""
    positions = model.positions()
    return min(int(metadata["max_length"]), positions) if positions else int(metadata["max_length"])


def write_records(folder: Path, model: JrftModel, metadata: dict, form: str) -> None:
    """What every merged folder holds besides the model: `jrft_manifest.json`, and a private run's guarantee."""
    manifest = {
        "app_version": __version__, "format": form, "method": metadata["method"], "base_model": metadata["base_model"],
        "metrics": metadata.get("metrics", {}), "label_names": metadata["label_names"], "pooling": model.pooling,
        "max_length": metadata["max_length"], "columns": metadata.get("columns"), "privacy": metadata.get("privacy"),
    }
    atomic_write_json(folder / MANIFEST_NAME, manifest)
    if metadata.get("privacy"):  # a private run's guarantee travels with the merged model
        from .privacy import write_report

        write_report(folder, metadata["privacy"], f"{metadata['method']} merged into {metadata['base_model']['id']}")


def stock_model(work: JrftModel, base: torch.nn.Module, labels, auto_class: str) -> torch.nn.Module:
    """A new model of the transformers Auto class `auto_class` (`AutoModel`, or the task's stock class) holding the
    merged weights of `base`, the labels named in its config; a task head it adds is the caller's to fill."""
    import transformers

    # the family may describe the merged weights as another stock type (a Qwen2 merge that needed biases: Llama)
    config = work.task.stock_config(copy.deepcopy(work.family.stock_config(base)), labels)
    stock = getattr(transformers, auto_class).from_config(config)
    config.architectures = [type(stock).__name__]
    body = getattr(stock, stock.base_model_prefix, stock)  # an AutoModel is the base model itself
    missing, unexpected = body.load_state_dict(base.state_dict(), strict=False)
    consumed = work.family.stock_head(work.task.name).consumes  # moved into the stock head (RoBERTa's pooler)
    unexpected = [name for name in unexpected if not name.startswith(consumed)]
    if missing or unexpected:  # a weight the stock class would drop (a bias it has no flag for) changes the outputs
        names = ", ".join([*missing, *unexpected][:3])
        raise ArtifactError(f"The merged weights do not fit the stock {type(stock).__name__} ({names}).")
    return stock.eval()


def check_transformers(model: JrftModel, method) -> None:
    """An ArtifactError saying why this run cannot be the task's stock transformers class, if it cannot."""
    method.check_foldable()
    model.task.check_stock_compatible(model)


def merged_stock(model: JrftModel, method, metadata: dict) -> torch.nn.Module:
    """The task's stock transformers model holding the run with its method folded in, its head written (the
    trained model is left as it was: the merge works on a copy)."""
    work, base = merged_copy(model, method)
    stock = stock_model(work, base, metadata["label_names"], model.task.stock_class)
    with torch.no_grad():
        work.family.stock_head(model.task.name).write(stock, base, work.head, work.layers()[-1], work.family)
    return stock


def export_merged(model: JrftModel, method, tokenizer, metadata: dict, out_dir: Path) -> Path:
    """A stock transformers folder of the task's class (e.g. `AutoModelForSequenceClassification`) with the method
    folded in (atomic)."""
    check_transformers(model, method)
    out_dir = check_target(out_dir)
    stock = merged_stock(model, method, metadata)
    with atomic_directory(out_dir) as temp:
        stock.save_pretrained(temp)
        tokenizer.save_pretrained(temp)
        write_records(temp, model, metadata, "transformers")
    return out_dir
