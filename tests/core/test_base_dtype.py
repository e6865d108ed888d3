"""The frozen base in its own precision (issue 29): `--base-dtype auto|fp32|bf16`, resolved from the run's
precision and method; what trains stays fp32; the run records it and `jrft eval` replays it; predictions and merged
models come from the full-precision base as before. Tolerances: a bf16 base computes under bf16 autocast exactly the
matrix products an fp32 base does there (autocast rounds fp32 weights to the same bf16 values); what differs is the
embeddings' and the output layer's rounding, which moved the validation loss of the runs below by under 1e-2
relative (tested); `jrft eval` of a bf16-base run replays its own numbers within 1e-5 relative."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import build_tiny_model

from jrft_desktop.cli import main
from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, RunConfig, TrainingSpec
from jrft_desktop.core.errors import UserError
from jrft_desktop.core.export.vector import read_vector, restore
from jrft_desktop.core.inference import Predictor
from jrft_desktop.core.models import load_backbone, weights_fingerprint
from jrft_desktop.core.tasks import get_task
from jrft_desktop.core.train import precision as precisions
from jrft_desktop.core.train.loop import Trainer

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not precisions.native_bf16(torch.device("cpu")),
                                 reason="bf16 bases need a CPU with native bf16")]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return build_tiny_model("llama", tmp_path_factory.mktemp("base-dtype") / "llama")


@pytest.fixture(scope="module")
def alpaca(shared_data, tmp_path_factory):
    """40 training and 12 validation rows of the Alpaca demo file."""
    rows = json.loads((shared_data / "instruct" / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    folder = tmp_path_factory.mktemp("alpaca")
    (folder / "train.json").write_text(json.dumps(rows[:40]), encoding="utf-8")
    (folder / "validation.json").write_text(json.dumps(rows[40:52]), encoding="utf-8")
    return folder


def _config(model, data, base_dtype="auto", method="slash"):
    return RunConfig(model=ModelSpec(str(model)), data=DataSpec(train=str(data / "train.json"),
                                                                validation=str(data / "validation.json"),
                                                                max_length=64),
                     method=MethodSpec(name=method),
                     training=TrainingSpec(max_steps=4, batch_size=4, eval_every=4, device="cpu", base_dtype=base_dtype))


def test_the_base_dtype_follows_the_runs_precision_and_method():
    assert precisions.resolve_base("auto", "bf16", "slash") == "bf16"
    assert precisions.resolve_base("auto", "bf16", "full") == "fp32"  # its trainable values are the base's weights
    assert precisions.resolve_base("auto", "fp32", "slash") == "fp32"
    assert precisions.resolve_base("fp32", "bf16", "slash") == "fp32"
    assert precisions.resolve_base("bf16", "bf16", "lora") == "bf16"
    with pytest.raises(UserError, match="bf16 autocast"):
        precisions.resolve_base("bf16", "fp32", "slash")
    assert precisions.replay_base("bf16", "bf16") == "bf16" and precisions.replay_base("bf16", "fp32") == "fp32"
    assert precisions.replay_base(None, "bf16") == "fp32"  # a run from before issue 29


def test_a_bf16_base_halves_the_weights_keeps_norms_and_what_trains_fp32(llama):
    task = get_task("generate")
    full, half = (load_backbone(ModelSpec(str(llama)), task, dtype) for dtype in (torch.float32, torch.bfloat16))
    matrices = [p for p in half.model.parameters() if p.dim() >= 2]
    assert matrices and all(p.dtype == torch.bfloat16 for p in matrices)
    assert all(p.dtype == torch.float32 for p in half.model.parameters() if p.dim() < 2)  # norm scales, biases
    assert half.output_head.weight.dtype == torch.bfloat16
    embedded = half.model.get_input_embeddings()(torch.tensor([[1, 2, 3]]))
    assert embedded.dtype == torch.float32  # the residual stream stays fp32
    # the fingerprint of a bf16 base: the same whether it was loaded in bf16 or in fp32 and rounded
    assert half.fingerprint == weights_fingerprint(full.model, torch.bfloat16) != full.fingerprint


def test_a_bf16_base_run_records_it_and_eval_replays_its_numbers(llama, alpaca, tmp_path, capsys):
    finished = Trainer(_config(llama, alpaca), tmp_path / "run").run()
    metrics = finished.metrics
    assert metrics["base_dtype"] == "bf16" and metrics["precision"] == "bf16"
    _, metadata = read_vector(tmp_path / "run" / "vector.safetensors")
    assert metadata["base_dtype"] == "bf16"
    restored = restore(tmp_path / "run" / "vector.safetensors", base_dtype="bf16")
    trainable = [p for p in restored.model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    # `jrft eval` on the run's own validation rows replays the bf16 base and the bf16 precision
    validation = alpaca / "validation.json"
    assert main(["eval", str(tmp_path / "run"), "--data", str(validation), "--device", "cpu"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    bf16_scored = Predictor.from_restored(restored, "cpu").evaluate(
        restored.model.task.load_examples(str(validation), metadata)).metrics
    assert replayed["loss"] == pytest.approx(bf16_scored["loss"], rel=1e-5)
    assert replayed["loss"] == pytest.approx(metrics["loss"], rel=1e-5)  # the run's own validation loss
    # the full-precision base (predictions, merged models) scores the same vector within 1e-2 relative
    fp32_scored = Predictor.from_restored(restore(tmp_path / "run" / "vector.safetensors"), "cpu").evaluate(
        restored.model.task.load_examples(str(validation), metadata)).metrics
    assert fp32_scored["loss"] == pytest.approx(bf16_scored["loss"], rel=1e-2)


def test_an_fp32_base_is_kept_when_asked_and_a_bf16_base_refused_in_fp32(llama, alpaca, tmp_path):
    finished = Trainer(_config(llama, alpaca, base_dtype="fp32"), tmp_path / "fp32").run()
    assert finished.metrics["base_dtype"] == "fp32"
    config = _config(llama, alpaca, base_dtype="bf16")
    config = RunConfig(model=config.model, data=config.data, method=config.method,
                       training=TrainingSpec(**{**config.training.__dict__, "precision": "fp32"}))
    with pytest.raises(UserError, match="bf16 autocast"):
        Trainer(config, tmp_path / "refused").run()
