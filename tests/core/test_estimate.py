"""What a run will take, known before it starts: the memory estimate and its parts, a refusal that names what to
change, projections regenerated on the fly when keeping them would be too big, gradient checkpointing (the same
steps for less memory), and the measured step time (nothing written)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from jrft_desktop.core import limits
from jrft_desktop.core.build import build_model
from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, RunConfig, TrainingSpec
from jrft_desktop.core.errors import UserError
from jrft_desktop.core.events import PreparedEvent, StepEvent
from jrft_desktop.core.formatting import format_bytes
from jrft_desktop.core.models import load_skeleton
from jrft_desktop.core.train.estimate import estimate_memory, measure_run, plan_memory, require_fits
from jrft_desktop.core.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def plan_of(folder, method: str, **options):
    skeleton = load_skeleton(ModelSpec(str(folder)))
    built = build_model(ModelSpec(str(folder)), MethodSpec(name=method, **options), None, 2, loaded=skeleton,
                        structure_only=True)
    return skeleton.info, built.plan


def config_for(folder, train, **training) -> RunConfig:
    settings = dict(max_steps=4, batch_size=8, eval_every=4, lr=0.05, device="cpu")
    return RunConfig(model=ModelSpec(str(folder)), data=DataSpec(train=str(train), max_length=32),
                     method=MethodSpec(name="slash", d=16), training=TrainingSpec(**{**settings, **training}))


def test_the_estimate_adds_up_and_grows_with_the_batch(tiny_models):
    info, plan = plan_of(tiny_models["bert"], "slash", d=64, position="intermediate")
    small, large = (estimate_memory(info, plan, batch, 32) for batch in (8, 64))
    # The tiny BERT: 999,072 parameters, hidden 32, MLP width 64, 2 layers, 2 heads; SLaSh d = 64 plus a 2-class head
    # (32 x 2 + 2) trains 130 values. Worked by hand, in bytes (4 a float), computing in fp32:
    assert small.weights == 4 * 999_072 == 3_996_288
    assert small.projections == 4 * 64 * 64 * (2 + 1) == 49_152  # every layer's W_l and one being made
    assert small.optimizer == 3 * 4 * 130 == 1_560  # gradient and two AdamW moments per trainable value
    # 8 x 32 = 256 tokens; per layer and token 24 x 32 + 4 x 64 = 1,024 bytes (an encoder's MLP keeps one MLP-wide
    # value), times 1.5 for the backward pass's own buffers, over two layers
    assert small.activations == int(1.5 * 256 * 1_024 * 2) == 786_432
    assert small.runtime == 430 * 2 ** 20 + 1_300 * 30_522  # the process, and the tokenizer by its vocabulary
    assert small.total == small.runtime + 3_996_288 + 49_152 + 1_560 + 786_432
    assert large.activations == 8 * small.activations  # activations scale with the batch
    # checkpointed: each layer's input and what the checkpoints hold (6 x 4 bytes per hidden value), and one layer's
    # activations while it is recomputed; on two layers that is no less than keeping them (it pays from the third)
    checkpointed = estimate_memory(info, plan, 64, 32, gradient_checkpointing=True)
    assert checkpointed.activations == 6 * 4 * 2_048 * 32 * 2 + int(1.5 * 2_048 * 1_024) == large.activations
    _, head = plan_of(tiny_models["bert"], "head")
    assert estimate_memory(info, head, 64, 32).activations == 0  # no backward through the frozen model
    # bf16: a base held in bf16 takes half the bytes, and the activations kept are (mostly) bf16; an fp32 base under
    # bf16 autocast keeps a bf16 copy of its weights for the backward pass
    half = estimate_memory(info, plan, 8, 32, precision="bf16", base_dtype="bf16")
    assert half.weights == 2 * 999_072
    # bf16: 16 x 32 + 2 x 64, and the eager attention's scores of 2 heads over 32 positions (fp32 and bf16)
    assert half.activations == int(1.5 * 256 * (16 * 32 + 2 * 64 + 6 * 2 * 32) * 2)
    assert estimate_memory(info, plan, 8, 32, precision="bf16").weights == 6 * 999_072


def test_a_language_model_head_adds_one_chunk_not_the_vocabulary_at_every_position(tiny_models):
    info, plan = plan_of(tiny_models["bert"], "slash", d=64)
    without = estimate_memory(info, plan, 8, 256)
    small, huge = (estimate_memory(info, plan, 8, 256, outputs_per_token=vocabulary) for vocabulary in
                   (50_000, 262_144))
    assert small.activations - without.activations < 200 * 2 ** 20  # one chunk of 2**24 logits, not 8 x 256 x V
    assert huge.activations - without.activations < 200 * 2 ** 20


def test_checkpointing_is_turned_on_where_it_makes_a_run_fit(tiny_models, monkeypatch):
    info, plan = plan_of(tiny_models["bert"], "slash", d=64)
    info = replace(info, layers=8)  # deep enough for checkpointing to save memory (above)
    asked = estimate_memory(info, plan, 64, 32)
    checkpointed = estimate_memory(info, plan, 64, 32, gradient_checkpointing=True)
    monkeypatch.setattr("jrft_desktop.core.train.estimate.memory_limit",
                        lambda: (asked.total + checkpointed.total) // 2)
    planned = plan_memory(info, plan, 64, 32)
    assert planned.checkpointing and planned.fits and "gradient checkpointing turned on" in planned.note
    assert planned.total == checkpointed.total
    monkeypatch.setattr("jrft_desktop.core.train.estimate.memory_limit", lambda: checkpointed.total // 2)
    refused = plan_memory(info, plan, 64, 32)  # does not fit either way: left as asked, and refused
    assert not refused.checkpointing and not refused.fits
    with pytest.raises(UserError, match="gradient checkpointing"):
        require_fits(refused, 64, plan, gradient_checkpointing=False)
    monkeypatch.setattr("jrft_desktop.core.train.estimate.memory_limit", lambda: asked.total * 2)
    assert not plan_memory(info, plan, 64, 32).checkpointing  # fits as asked: nothing changes


def test_checkpointing_is_turned_on_where_the_activations_outgrow_the_frozen_model(tiny_models, monkeypatch):
    """Left automatic (None), a run whose activations would pass both the frozen weights and 1 GiB recomputes them;
    the user's True or False is kept as it is."""
    monkeypatch.setattr("jrft_desktop.core.train.estimate.memory_limit", lambda: 64 * 2 ** 30)  # memory is no limit
    info, plan = plan_of(tiny_models["bert"], "slash", d=64)
    info = replace(info, layers=8)
    big = estimate_memory(info, plan, 1024, 128)
    assert big.activations > 2 ** 30 > 100 * big.weights
    planned = plan_memory(info, plan, 1024, 128)
    assert planned.checkpointing and planned.total < big.total
    assert f"its activations would take {format_bytes(big.activations)}, more than the frozen model's" in planned.note
    assert not plan_memory(info, plan, 1024, 128, gradient_checkpointing=False).checkpointing
    assert plan_memory(info, plan, 1024, 128, gradient_checkpointing=True).note == ""  # asked for: no note
    small = plan_memory(info, plan, 64, 128)  # activations above the weights, but under 1 GiB: kept
    assert small.activations > small.weights and not small.checkpointing


def test_the_trainer_turns_checkpointing_on_with_a_note(tiny_models, sst2_200, tmp_path, monkeypatch):
    from jrft_desktop.core.train import estimate

    real = estimate.estimate_memory

    def tight(*args, **kwargs):  # the limit lies between the run's estimate with and without checkpointing
        found = real(*args, **kwargs)
        checkpointing = args[4] if len(args) > 4 else kwargs.get("gradient_checkpointing", False)
        return replace(found, limit=found.total + (1 if checkpointing else -1))

    monkeypatch.setattr(estimate, "estimate_memory", tight)
    events = []
    Trainer(config_for(tiny_models["bert"], sst2_200, max_steps=2), tmp_path / "run", [events.append]).run()
    prepared = next(event for event in events if isinstance(event, PreparedEvent))
    assert any(note.startswith("gradient checkpointing turned on") for note in prepared.notes)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))["estimated_memory_mb"] > 0


def test_a_run_that_will_not_fit_is_refused_with_what_to_change(tiny_models, monkeypatch):
    info, plan = plan_of(tiny_models["bert"], "slash", d=64)
    estimate = estimate_memory(info, plan, 64, 32)
    monkeypatch.setattr("jrft_desktop.core.train.estimate.memory_limit", lambda: estimate.total // 2)
    with pytest.raises(UserError, match=r"would take about .* at its peak .*--batch-size 32.*gradient checkpointing"):
        require_fits(estimate_memory(info, plan, 64, 32), 64, plan, gradient_checkpointing=False)


def test_projections_too_big_to_keep_are_regenerated_on_the_fly(tiny_models, monkeypatch):
    info, kept = plan_of(tiny_models["bert"], "slash", d=4096, position="intermediate")
    assert not kept.on_the_fly
    stored = 4 * 4096 * info.intermediate_size * (info.layers + 1)
    monkeypatch.setattr(limits, "memory_limit", lambda: 2 * stored)  # keeping them would take half of a run's share
    _, plan = plan_of(tiny_models["bert"], "slash", d=4096, position="intermediate")
    assert plan.on_the_fly and "regenerated on the fly" in plan.note
    # on the fly: the one made in forward, again in backward, and its draw (whatever the number of layers)
    assert estimate_memory(info, plan, 8, 32).projections == 4 * 4096 * info.intermediate_size * 3


def test_gradient_checkpointing_takes_the_same_steps(tiny_models, sst2_200, tmp_path):
    losses = {}
    for checkpointing in (False, True):
        events = []
        Trainer(config_for(tiny_models["bert"], sst2_200, gradient_checkpointing=checkpointing),
                tmp_path / str(checkpointing), [events.append]).run()
        losses[checkpointing] = [event.loss for event in events if isinstance(event, StepEvent)]
    assert losses[True] == pytest.approx(losses[False], abs=1e-6) and len(losses[True]) == 4
    metrics = json.loads((tmp_path / "True" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["train_steps"] == 4


def test_measured_step_time_writes_nothing(tiny_models, sst2_200, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    estimate = measure_run(config_for(tiny_models["bert"], sst2_200), steps=2)
    assert estimate.steps_measured == 2 and 0 < estimate.step_s < 30
    assert estimate.memory.total > estimate.memory.weights > 0
    assert "a step takes" in estimate.describe()
    assert list(tmp_path.iterdir()) == []
    assert torch.get_num_threads() == 1


def test_checkpointed_layers_train_even_with_dropout_off(tiny_models):
    """transformers checkpoints a layer only in training mode: with dropout off the layers are still marked as
    training (their dropout modules are not), or `--gradient-checkpointing` would keep every activation."""
    from jrft_desktop.core.train.step import train_mode

    built = build_model(ModelSpec(str(tiny_models["bert"])), MethodSpec(name="slash", d=16), None, 2,
                        loaded=load_skeleton(ModelSpec(str(tiny_models["bert"]))), structure_only=True)
    base = built.model.base()
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    train_mode(built.model, False)
    checkpointed = [m for m in base.modules() if getattr(m, "gradient_checkpointing", False) is True]
    assert checkpointed and all(module.training for module in checkpointed)
    assert not any(m.training for m in base.modules() if isinstance(m, torch.nn.Dropout))


def test_every_norm_of_a_layer_counts_in_the_activations(tmp_path):
    """Two norms of the hidden size in a Llama layer; Gemma 3's four, and its query and key norms (head_dim each):
    each keeps its fp32 input for the backward pass, so the estimate counts them."""
    from tiny_models import FAMILY_CONFIGS, build_family_model

    from jrft_desktop.core.models import describe

    llama, gemma = (describe(ModelSpec(str(build_family_model(family, tmp_path / family))))
                    for family in ("llama", "gemma3_text"))
    assert llama.normed_width == 2 * llama.hidden_size
    head_dim = FAMILY_CONFIGS["gemma3_text"][1]["head_dim"]
    assert gemma.normed_width == 4 * gemma.hidden_size + 2 * head_dim
