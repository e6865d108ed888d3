"""Issue 20: the precision a run computes in (bf16 only where the CPU or GPU has it natively, a clear refusal
otherwise), batches grouped by length (every example once an epoch, less padding on real SST-2 rows), evaluation
in input order, and the Compare page's "not converged" marking."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_models import build_tiny_model

from jrft_desktop.core import bench
from jrft_desktop.core.train import precision
from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, RunConfig, TrainingSpec
from jrft_desktop.core.errors import UserError
from jrft_desktop.core.inference import predict_logits
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.paths import sample_data_dir
from jrft_desktop.core.tasks import get_task
from jrft_desktop.core.tasks.classify import load_task_data
from jrft_desktop.core.train.batching import MEGA_BATCH, Batches
from jrft_desktop.core.train.step import Optimization
from jrft_desktop.core.train.loop import Trainer
from jrft_desktop.core.build import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
WITHOUT_BF16 = frozenset({"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq"})  # AVX-512, but emulated bf16
WITH_BF16 = WITHOUT_BF16 | {"avx512_bf16"}
needs_bf16 = pytest.mark.skipif(not precision.native_bf16(CPU), reason="this CPU has no native bf16")


def tiny_config(tiny_models, train_file, **training) -> RunConfig:
    settings = {"max_steps": 4, "batch_size": 8, "eval_every": 2, "lr": 0.05, "device": "cpu"}
    return RunConfig(model=ModelSpec(str(tiny_models["bert"])), data=DataSpec(train=str(train_file), max_length=32),
                     method=MethodSpec(name="slash", d=16), training=TrainingSpec(**{**settings, **training}))


# --- precision -------------------------------------------------------------------------------------------------
def test_precision_is_resolved_from_the_cpu_features():
    assert precision.resolve("fp32", CPU, WITH_BF16) == "fp32"
    assert precision.resolve("auto", CPU, WITHOUT_BF16) == "fp32"  # never the emulated path
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert precision.resolve("auto", CPU, WITH_BF16) == "bf16"
        assert precision.resolve("bf16", CPU, WITH_BF16 - {"avx512_bf16"} | {"amx_bf16"}) == "bf16"
    with pytest.raises(UserError, match="emulated"):
        precision.resolve("bf16", CPU, WITHOUT_BF16)
    with pytest.raises(UserError, match="auto, fp32, bf16"):
        precision.resolve("fp16", CPU, WITH_BF16)
    assert precision.autocast("fp32", CPU) is None
    assert precision.autocast("bf16", CPU).fast_dtype == torch.bfloat16


def test_a_cpu_without_native_bf16_trains_in_fp32_and_refuses_bf16(tiny_models, sst2_200, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: WITHOUT_BF16)
    finished = Trainer(tiny_config(tiny_models, sst2_200), tmp_path / "auto").run()
    assert finished.metrics["precision"] == "fp32"
    with pytest.raises(UserError, match="no native bf16"):
        Trainer(tiny_config(tiny_models, sst2_200, precision="bf16"), tmp_path / "bf16").run()
    assert not (tmp_path / "bf16").exists()  # refused before anything was written


@needs_bf16
def test_a_bf16_step_computes_in_bf16_and_keeps_the_trainable_tensors_fp32(tiny_models):
    task = get_task("classify")
    loaded = load_backbone(ModelSpec(str(tiny_models["bert"])))
    model, _, _ = build_model(ModelSpec(pooling="mean"), MethodSpec(name="slash", d=16), task, 2, loaded=loaded)
    model.train(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=0.05)
    optimization = Optimization.create(model, optimizer, task.loss_function("classification"), CPU, precision="bf16")
    seen = []
    first_linear = next(m for m in model.base().modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    encoder = task.make_encoder(loaded.tokenizer, 32, model)
    rows, _ = encoder.encode(["a gorgeous , witty film", "a tedious mess", "fine", "not good at all"])
    before = model.projected.z.detach().clone()
    loss = optimization.step(encoder.collate(rows), torch.tensor([1, 0, 1, 0]))
    assert np.isfinite(loss) and seen == [torch.bfloat16]
    assert not torch.equal(model.projected.z.detach(), before)  # the vector moved
    assert all(p.dtype == torch.float32 for p in trainable)
    assert all(value.dtype == torch.float32 for state in optimizer.state.values() for value in state.values()
               if isinstance(value, torch.Tensor) and value.is_floating_point())


def test_only_an_encoder_trained_in_bf16_on_a_cpu_switches_to_eager_attention():
    assert precision.training_attention("bf16", CPU, causal=False) == "eager"
    assert precision.training_attention("fp32", CPU, causal=False) is None
    assert precision.training_attention("bf16", CPU, causal=True) is None  # a decoder's fused causal kernel is faster
    assert precision.training_attention("bf16", torch.device("cuda"), causal=False) is None


@needs_bf16
@pytest.mark.parametrize(("family", "kernel"), [("bert", "eager"), ("distilbert", "eager"), ("llama", "sdpa")])
def test_a_bf16_step_of_an_encoder_runs_eager_attention_and_evaluation_the_fused_one(tiny_models, family, kernel,
                                                                                    tmp_path):
    """The kernel seen inside the forward pass of a step, and after it; the loss is the fused kernel's."""
    task = get_task("classify")
    source = tiny_models[family] if family in tiny_models else build_tiny_model(family, tmp_path / family)
    loaded = load_backbone(ModelSpec(str(source)), task)
    model, _, _ = build_model(ModelSpec(), MethodSpec(name="slash", d=16), task, 2, loaded=loaded)
    model.train(False)
    base = model.base()
    assert base.config._attn_implementation == "sdpa"
    seen = []
    base.register_forward_pre_hook(lambda module, args: seen.append(base.config._attn_implementation))
    encoder = task.make_encoder(loaded.tokenizer, 32, model)
    rows, _ = encoder.encode(["a gorgeous , witty film", "a tedious mess of a film", "fine"])
    inputs, labels = encoder.collate(rows), torch.tensor([1, 0, 1])
    optimization = Optimization.create(model, torch.optim.SGD(model.parameters(), lr=0.0), task.loss_function(
        "classification"), CPU, precision="bf16")
    switched = optimization.backward(inputs, labels)
    assert seen == [kernel] and base.config._attn_implementation == "sdpa"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference = optimization.loss_fn(model(**inputs).float(), labels)
    assert seen == [kernel, "sdpa"]
    assert float(switched) == pytest.approx(float(reference), rel=2e-2)


@needs_bf16
def test_a_bf16_run_records_its_precision_and_its_timing(tiny_models, sst2_200, tmp_path):
    finished = Trainer(tiny_config(tiny_models, sst2_200, precision="bf16"), tmp_path / "run").run()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["precision"] == finished.metrics["precision"] == "bf16"
    assert 0 < metrics["eval_time_s"] < metrics["wall_time_s"] and 0 < metrics["train_time_s"] < metrics["wall_time_s"]
    vector = load_file(str(tmp_path / "run" / "vector.safetensors"))
    assert vector["projected.z"].dtype == torch.float32 and vector["projected.z"].abs().sum() > 0
    from jrft_desktop.core.export import vector as vector_file

    assert vector_file.restore(tmp_path / "run" / "vector.safetensors").metadata["precision"] == "bf16"


# --- batches grouped by length ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sst2_rows():
    """2,000 real SST-2 training sentences, tokenised by the bundled model's tokenizer."""
    from transformers import AutoTokenizer

    from jrft_desktop.core.config import DEFAULT_MODEL
    from jrft_desktop.core.models import resolve_source

    lines = (sample_data_dir() / "sst2_train.tsv").read_text(encoding="utf-8").splitlines()[1:2001]
    tokenizer = AutoTokenizer.from_pretrained(resolve_source(DEFAULT_MODEL))
    encoded = tokenizer([line.rsplit("\t", 1)[0] for line in lines], truncation=True, max_length=64)
    return [{"input_ids": ids} for ids in encoded["input_ids"]]


@pytest.mark.parametrize("accumulation", [1, 3])
def test_grouped_batches_cover_every_example_once_an_epoch(sst2_rows, accumulation):
    lengths = get_task("classify").row_lengths(sst2_rows)
    batches = Batches(sst2_rows, [0] * len(sst2_rows), 16, seed=4, lengths=lengths, group_by_length=True,
                      accumulation=accumulation)
    orders = []
    for epoch in range(3):
        picked = [batches.indices(epoch * batches.per_epoch + index) for index in range(batches.per_epoch)]
        assert sorted(i for batch in picked for i in batch) == list(range(len(sst2_rows)))
        assert all(len(batch) == 16 for batch in picked[:-1])  # only the epoch's last batch is short
        orders.append([i for batch in picked for i in batch])
        widths = [max(lengths[i] for i in batch) for batch in picked]
        assert widths != sorted(widths) and widths != sorted(widths, reverse=True)  # batches in a random order
    assert orders[0] != orders[1] != orders[2]
    again = Batches(sst2_rows, [0] * len(sst2_rows), 16, seed=4, lengths=lengths, group_by_length=True,
                    accumulation=accumulation)
    assert again.indices(batches.per_epoch + 5) == batches.indices(batches.per_epoch + 5)  # (seed, epoch) only


def test_grouping_by_length_cuts_the_padding_of_real_sst2_batches(sst2_rows):
    lengths = get_task("classify").row_lengths(sst2_rows)
    assert len(sst2_rows) > 2 * 32 * MEGA_BATCH * 0.6  # several length groups' worth of rows
    plain = Batches(sst2_rows, [0] * len(sst2_rows), 32, seed=0, lengths=lengths)
    grouped = Batches(sst2_rows, [0] * len(sst2_rows), 32, seed=0, lengths=lengths, group_by_length=True)
    assert plain.padded_share() > 0.4  # SST-2 mixes short phrases and long sentences
    assert grouped.padded_share() < plain.padded_share() / 4


def test_ungrouped_batches_keep_the_earlier_order():
    """Without grouping, runs (and checkpoints) made before it see the same batches as before."""
    rows = [{"input_ids": [1] * (1 + index % 5)} for index in range(50)]
    batches = Batches(rows, [0] * 50, 8, seed=3, lengths=[1 + index % 5 for index in range(50)])
    # The batches of seed 3's first epoch, as every version before grouping drew them (pinned, not recomputed).
    assert [batches.indices(index) for index in range(7)] == [
        [34, 38, 44, 7, 10, 8, 48, 43], [13, 47, 17, 5, 33, 14, 3, 22], [18, 6, 24, 1, 30, 16, 35, 27],
        [12, 2, 42, 37, 32, 39, 41, 49], [23, 21, 20, 15, 11, 28, 29, 36], [31, 25, 46, 26, 9, 0, 19, 40], [4, 45]]


def test_evaluation_sorts_by_length_and_returns_the_input_order(tiny_models):
    task = get_task("classify")
    loaded = load_backbone(ModelSpec(str(tiny_models["bert"])))
    model, _, _ = build_model(ModelSpec(pooling="mean"), MethodSpec(name="slash", d=16), task, 2, loaded=loaded)
    with torch.no_grad():
        model.projected.z.normal_()
    encoder = task.make_encoder(loaded.tokenizer, 32, model)
    texts = ["a long and winding sentence that goes on and on about a film", "good", "a film , fine",
             "bad", "the longest of them all , a sentence with many words in it , and then some more", "ok then"]
    rows, _ = encoder.encode(texts)
    assert task.row_lengths(rows) != sorted(task.row_lengths(rows))
    together = predict_logits(model, encoder, rows, CPU, batch_size=2)
    alone = np.concatenate([predict_logits(model, encoder, [row], CPU) for row in rows])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert len({tuple(np.round(row, 4)) for row in alone}) == len(rows)  # the rows differ, so order shows


def test_a_run_reports_the_padding_it_computed(tiny_models, sst2_200, tmp_path):
    grouped = Trainer(tiny_config(tiny_models, sst2_200, precision="fp32"), tmp_path / "grouped").run().metrics
    plain = Trainer(tiny_config(tiny_models, sst2_200, precision="fp32", group_by_length=False),
                    tmp_path / "plain").run().metrics
    assert grouped["group_by_length"] and not plain["group_by_length"]
    assert 0 <= grouped["padded_share"] < plain["padded_share"] < 1


# --- the Compare page's bench: "not converged" ------------------------------------------------------------------
def test_a_run_still_improving_at_its_end_is_not_converged():
    assert bench.run_converged({"status": "early-stopped", "best_step": 20, "train_steps": 40}, 10) is True
    assert bench.run_converged({"status": "completed", "best_step": 30, "train_steps": 50}, 5) is True
    assert bench.run_converged({"status": "completed", "best_step": 50, "train_steps": 50}, 5) is False
    assert bench.run_converged({"status": "completed", "best_step": 50, "train_steps": 50}, 1) is None


def test_the_comparison_table_marks_a_rising_curve(tmp_path):
    def case(label, converged, steps):
        return bench.CaseResult(label=label, method="slash", size_name="d", size=64, position="output",
                                method_params=64, trainable_params=66, foldable=True, seeds=(0, 1),
                                scores=(0.8, 0.82), converged=converged, train_steps=steps)

    result = bench.BenchResult(output=str(tmp_path), metric="accuracy", cases=(
        case("rising", (True, False), (120, 300)), case("settled", (True, True), (120, 140)),
        case("once", (None, None), (30, 30))), curve=(), machine={}, matmul_peak_flops=1.0, settings={},
        wall_time_s=1.0, train_examples=10, validation_examples=10, validation_source="file")
    marks = {row[0]: row[bench.ACCURACY_COLUMNS.index("converged")] for row in bench.accuracy_rows(result)}
    assert marks == {"rising": "not converged (still rising at step 300)",
                     "settled": "yes (stopped improving; 140 steps)", "once": "–"}
    assert [c.label for c in result.cases if c.not_converged] == ["rising"]


def test_compare_settings_train_until_the_metric_stops_improving():
    settings = bench.compare_settings(ModelSpec(), DataSpec(), ())
    assert settings.patience and settings.evaluations > settings.patience
    assert settings.steps >= 10 * bench.quick_settings(ModelSpec(), DataSpec(), ()).steps
    assert settings.eval_every * settings.evaluations == settings.steps


def test_data_for_the_sweep_is_held_out_of_the_training_file(sst2_200):
    """The defaults sweep scores on rows split off the training file (`benchmarks/slash_defaults_sweep.py`)."""
    data = load_task_data(DataSpec(train=str(sst2_200), max_validation_rows=10), 0)
    assert "split of train" in data.validation_source
    assert not set(data.validation.texts) & set(data.train.texts)


def test_the_cli_sets_the_precision_and_turns_grouping_off():
    from jrft_desktop.cli import build_parser, config_from_args

    parse = build_parser().parse_args
    default = config_from_args(parse(["train", "--data", "x.tsv", "--output", "out"])).training
    assert (default.precision, default.group_by_length) == ("auto", True)
    chosen = config_from_args(parse(["train", "--data", "x.tsv", "--output", "out", "--precision", "fp32",
                                     "--no-group-by-length"])).training
    assert (chosen.precision, chosen.group_by_length) == ("fp32", False)
    with pytest.raises(SystemExit):
        parse(["train", "--data", "x.tsv", "--output", "out", "--precision", "fp16"])
