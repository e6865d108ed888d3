"""Merged models: the method folded into the base weights and saved as the stock transformers class of the run's
task (zero added latency for SLaSh), with the helpers the other merged forms share (the target folder's check,
a merged copy, the manifest and records written beside the weights)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ... import __version__
from ..errors import ArtifactError
from ..models import JrftModel
from ..paths import atomic_directory, atomic_write_json

MANIFEST_NAME = "jrft_manifest.json"


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
        from ..privacy_report import write_report

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
    check_stock_weights(model, method)
    model.task.check_stock_compatible(model)
    if model.family.stock_problem(model.task.name):
        raise ArtifactError(model.family.stock_problem(model.task.name))


def check_stock_weights(model: JrftModel, method) -> None:
    """An ArtifactError when the folded weights have no place in the family's stock classes (a SLaSh shift into a
    projection without a bias the stock class can hold): such a folder would load with a tensor dropped."""
    problem = method.stock_problem(model)
    if problem:
        raise ArtifactError(problem)


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
