"""A merged model as an ONNX folder: `model.onnx` (inputs `input_ids`, `attention_mask` and, where the model reads
them, `token_type_ids`, each [batch, sequence]; output `logits`), `tokenizer.json` with the run's truncation and
padding set, the tokenizer's other files, and `config.json` with the label names.

The graph is the merged model's own forward traced as it is (the backbone, then the task's read-out: pooling and
head for a classifier, one output per token for a tagger), so every task and every pooling is inside it. It is
traced by torch's TorchScript exporter (`dynamo=False`), which needs no `onnxscript` and works offline; before the
folder is written, onnxruntime runs the graph on two batches of other sizes and lengths and must reproduce the
trained model's outputs."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ..errors import ArtifactError
from .merged import check_target, max_tokens, merged_copy, write_records
from ..models import JrftModel
from ..paths import atomic_directory

FORM = "onnx"
MODEL_FILE = "model.onnx"
OUTPUT = "logits"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # those of them the task's encoder gives, in this order
OPSET = 17
TOLERANCE = 1e-4
# Two batches of other sizes and lengths: the graph is traced on one and checked on both (dynamic axes)
PROBES = (("a fine film",), ("dull , flat and far too long for what it has to say", "never mind"))


class _Graph(nn.Module):
    """The merged model's forward with positional inputs, as the exporter traces it."""

    def __init__(self, model: JrftModel, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs)))


def check(model: JrftModel, method) -> None:
    """Every run whose method folds can be written as ONNX."""
    method.check_foldable()


def export_onnx(model: JrftModel, method, tokenizer, metadata: dict, out_dir: Path) -> Path:
    """Write the folder atomically; the trained model is left as it was (the merge works on a copy)."""
    check(model, method)
    out_dir = check_target(out_dir)
    runtime = copy.deepcopy(model.task.stock_tokenizer(model, tokenizer))
    work, base = merged_copy(model, method)
    length = max_tokens(work, metadata)
    runtime.model_max_length = length
    encoder = work.task.make_encoder(tokenizer, length, work)
    probes = [encoder.collate(work.task.encode(encoder, work.task.examples_from_texts(texts))[0]) for texts in PROBES]
    names = [name for name in INPUTS if name in probes[0]]
    graph = _Graph(work, names)
    with torch.no_grad():
        expected = [graph(*(probe[name] for name in names)) for probe in probes]
    config = work.task.stock_config(copy.deepcopy(base.config), metadata["label_names"])
    with atomic_directory(out_dir) as temp:
        _trace(graph, names, probes[1], _dynamic_axes(names, expected), temp / MODEL_FILE)
        _verify(temp / MODEL_FILE, names, probes, expected)
        runtime.save_pretrained(temp)
        _standalone(runtime, length).save(str(temp / "tokenizer.json"))
        config.save_pretrained(temp)
        write_records(temp, model, metadata, FORM)
    return out_dir


def _dynamic_axes(names: list[str], outputs: list[torch.Tensor]) -> dict[str, dict[int, str]]:
    """Batch and sequence of every input; of the output, the batch and any dimension that followed the length
    between the two probes (a tagger's tokens)."""
    first, second = (output.shape for output in outputs)
    lengths = {dim: "sequence" for dim in range(1, len(first)) if first[dim] != second[dim]}
    return {**{name: {0: "batch", 1: "sequence"} for name in names}, OUTPUT: {0: "batch", **lengths}}


def _trace(graph: _Graph, names: list[str], probe: dict, axes: dict, path: Path) -> None:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's tracer notes and its deprecation notice
        torch.onnx.export(graph, tuple(probe[name] for name in names), str(path), input_names=names,
                          output_names=[OUTPUT], dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def _verify(path: Path, names: list[str], probes: list[dict], expected: list[torch.Tensor]) -> None:
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for probe, wanted in zip(probes, expected):
        got = session.run([OUTPUT], {name: probe[name].numpy() for name in names})[0]
        difference = float(np.abs(got - wanted.numpy()).max())
        if not difference <= TOLERANCE:
            raise ArtifactError(f"The ONNX graph's outputs differ from the trained model's by {difference:.2g} (more "
                                f"than {TOLERANCE:g}), so it was not written; the vector file holds this run.")


def _standalone(tokenizer, length: int):
    """The fast tokenizer's `tokenizers.Tokenizer` with the run's truncation and padding switched on, so that
    `Tokenizer.from_file("tokenizer.json").encode_batch(texts)` alone gives the graph's inputs."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.enable_truncation(length)
    backend.enable_padding(pad_id=tokenizer.pad_token_id or 0, pad_token=tokenizer.pad_token or "")
    return backend
