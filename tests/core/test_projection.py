"""The fixed random projections W_l: pinned values, determinism, scale, the on-the-fly mode and the spec check."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from jrft_desktop.core import projection
from jrft_desktop.core.config import MethodSpec, ModelSpec
from jrft_desktop.core.errors import ArtifactError
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.tasks.classify import Encoder
from jrft_desktop.core.paths import sample_data_dir
from jrft_desktop.core.projection import ProjectionSpec, check_spec, fingerprint, generate
from jrft_desktop.core.build import build_model

SMALL = ProjectionSpec(seed=0, d=8, widths=(4, 6))


pytestmark = pytest.mark.usefixtures("one_thread")


# What this protects: a saved vector z only means something together with the exact W_l it was trained with,
# and those are regenerated from the seed, never stored. If a torch release changes its CPU normal generator
# (or someone changes the per-layer seeding, the dtype or the 1/sqrt(d) scale), every existing vector file
# would silently load onto different projections. These literal values were computed once (torch 2.13, CPU)
# and pasted here; a failure means the projections changed and old vectors no longer reproduce their results.
GOLDEN_FINGERPRINT = "52be8ef6b41d54d2993723dce51a3439099cd2b98b6885f3a0f464fdac4f9e2a"
GOLDEN_LAYER0_FIRST3 = (0.12493589520454407, 0.4131816327571869, 0.0351841039955616)


def test_golden_values():
    assert fingerprint(SMALL) == GOLDEN_FINGERPRINT
    first = generate(SMALL, 0).flatten()[:3]
    assert first.dtype == torch.float32
    assert tuple(float(value) for value in first) == GOLDEN_LAYER0_FIRST3  # exact: float32 -> float64 is exact


def test_shapes_and_layer_independence():
    spec = ProjectionSpec(seed=3, d=16, widths=(5, 7, 9))
    assert [tuple(generate(spec, layer).shape) for layer in range(3)] == [(16, 5), (16, 7), (16, 9)]
    # A layer's matrix does not depend on the other layers' widths (on-the-fly mode rebuilds one alone).
    other = ProjectionSpec(seed=3, d=16, widths=(50, 7, 1))
    assert torch.equal(generate(spec, 1), generate(other, 1))


def test_deterministic_across_calls_and_global_rng():
    spec = ProjectionSpec(seed=11, d=32, widths=(24, 24))
    first = generate(spec, 1)
    torch.manual_seed(12345)
    torch.randn(1000)  # the global generator's state must not matter
    assert torch.equal(first, generate(spec, 1))
    assert fingerprint(spec) == fingerprint(spec)


def test_deterministic_across_processes():
    spec = ProjectionSpec(seed=11, d=32, widths=(24, 40))
    code = ("import json; from jrft_desktop.core.projection import ProjectionSpec, fingerprint, generate; "
            "s = ProjectionSpec(seed=11, d=32, widths=(24, 40)); "
            "print(json.dumps([fingerprint(s), generate(s, 1)[0, :5].tolist()]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    other_fingerprint, other_values = json.loads(done.stdout.strip().splitlines()[-1])
    assert other_fingerprint == fingerprint(spec)
    assert other_values == generate(spec, 1)[0, :5].tolist()


def test_seeds_and_layers_differ():
    base = ProjectionSpec(seed=0, d=16, widths=(32, 32))
    reseeded = ProjectionSpec(seed=1, d=16, widths=(32, 32))
    assert not torch.equal(generate(base, 0), generate(base, 1))
    assert not torch.equal(generate(base, 0), generate(reseeded, 0))
    assert fingerprint(base) != fingerprint(reseeded)
    # Not merely different: about uncorrelated.
    a, b = generate(base, 0).flatten(), generate(base, 1).flatten()
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.15
    assert fingerprint(base) != fingerprint(ProjectionSpec(seed=0, d=16, widths=(32, 33)))


def test_scale_is_one_over_sqrt_d():
    d = 256
    values = generate(ProjectionSpec(seed=4, d=d, widths=(4096,)), 0)  # about a million draws
    # The sample std of 1M normal draws is within ~0.1% of the truth; 2% leaves room without hiding a wrong scale
    # (1/sqrt(2d) or 1/d would be off by 29% and 94%).
    assert values.std().item() == pytest.approx(1 / math.sqrt(d), rel=0.02)
    assert abs(values.mean().item()) < 0.01 / math.sqrt(d)  # the mean of 1M draws is ~0.001 / sqrt(d)
    # So a z with unit entries gives shifts of unit scale, whatever d is.
    z = torch.ones(d)
    assert (z @ values).std().item() == pytest.approx(1.0, rel=0.05)


def test_check_spec_refuses_a_wrong_fingerprint():
    check_spec(SMALL, GOLDEN_FINGERPRINT)  # the right one passes
    with pytest.raises(ArtifactError, match="fingerprint"):
        check_spec(SMALL, "0" * 64)
    with pytest.raises(ArtifactError, match="fingerprint"):
        check_spec(ProjectionSpec(seed=1, d=8, widths=(4, 6)), GOLDEN_FINGERPRINT)
    with pytest.raises(ArtifactError, match="another projection generator"):
        check_spec(ProjectionSpec(seed=0, d=8, widths=(4, 6), generator="numpy"), GOLDEN_FINGERPRINT)


def test_spec_round_trips_through_json():
    spec = ProjectionSpec(seed=2, d=10, widths=(3, 4))
    assert ProjectionSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# --- on-the-fly mode --------------------------------------------------------------------------------------------


def _batch(count: int = 8):
    lines = (sample_data_dir() / "sst2_train.tsv").read_text(encoding="utf-8").splitlines()[1:count + 1]
    texts = [line.split("\t")[0] for line in lines]
    labels = torch.tensor([int(line.split("\t")[1]) for line in lines])
    return texts, labels


def _slash(folder, on_the_fly: bool, position: str, d: int = 48):
    loaded = load_backbone(ModelSpec(str(folder)))
    torch.manual_seed(0)  # the same head in both modes
    model, _, plan = build_model(ModelSpec(pooling="cls"), MethodSpec(name="slash", d=d, position=position,
                                                                on_the_fly=on_the_fly), None, 2, loaded=loaded)
    with torch.no_grad():
        model.projected.z.copy_(torch.randn(d, generator=torch.Generator().manual_seed(9)))
    model.eval()
    return loaded, model


@pytest.mark.parametrize("position", ["attention", "intermediate", "output"])
def test_on_the_fly_matches_stored_projections(tiny_models, position):
    texts, labels = _batch()
    results = {}
    for on_the_fly in (False, True):
        loaded, model = _slash(tiny_models["bert"], on_the_fly, position)
        encoder = Encoder(loaded.tokenizer, 32, model)
        rows, _ = encoder.encode(texts)
        loss = torch.nn.functional.cross_entropy(model(**encoder.collate(rows)), labels)
        loss.backward()
        results[on_the_fly] = (loss.detach(), model.projected.z.grad.clone(), model.head.weight.grad.clone(), model)
    stored, fly = results[False], results[True]
    assert torch.allclose(stored[0], fly[0], rtol=0, atol=1e-6)
    assert stored[1].abs().max() > 1e-4  # a real gradient, not zeros on both sides
    assert torch.allclose(stored[1], fly[1], rtol=1e-5, atol=1e-7)
    assert torch.allclose(stored[2], fly[2], rtol=1e-5, atol=1e-7)

    # The memory saving is real: no w_* buffers, and the stored mode holds exactly L x d x width floats more.
    stored_model, fly_model = stored[3], fly[3]
    assert not [name for name, _ in fly_model.projected.named_buffers()]
    assert sorted(name for name, _ in stored_model.projected.named_buffers()) == ["w_0", "w_1"]

    def buffer_bytes(model):
        return sum(b.numel() * b.element_size() for b in model.buffers())

    width = 64 if position == "intermediate" else 32
    assert buffer_bytes(stored_model) - buffer_bytes(fly_model) == 2 * 48 * width * 4
    # The projections are not part of what gets saved either way.
    assert not any(name.startswith("projected.w_") for name in stored_model.state_dict())


def test_on_the_fly_gradient_matches_autograd_directly():
    spec = ProjectionSpec(seed=5, d=12, widths=(7, 9))
    stored = projection.ProjectedVector(spec, on_the_fly=False)
    fly = projection.ProjectedVector(spec, on_the_fly=True)
    start = torch.randn(12, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(9, generator=torch.Generator().manual_seed(2))
    for vector in (stored, fly):
        with torch.no_grad():
            vector.z.copy_(start)
        ((vector.shift(1) * weights).sum() + vector.shift(0).pow(2).sum()).backward()
    assert torch.allclose(stored.shift(0), fly.shift(0))
    assert torch.allclose(stored.z.grad, fly.z.grad, rtol=1e-6, atol=1e-7)
    expected = generate(spec, 1) @ weights + 2 * generate(spec, 0) @ (start @ generate(spec, 0))
    assert torch.allclose(fly.z.grad, expected, rtol=1e-5, atol=1e-6)


def test_on_the_fly_shifts_without_gradients_are_made_once_per_z(monkeypatch):
    """Evaluation and generation run many forward passes on one z: each W_l is regenerated once, and again only
    after z changes (an optimizer step), never a stale shift."""
    spec = ProjectionSpec(seed=5, d=12, widths=(7, 9))
    fly = projection.ProjectedVector(spec, on_the_fly=True)
    made, real = [], projection.generate
    monkeypatch.setattr(projection, "generate", lambda spec, layer: made.append(layer) or real(spec, layer))
    with torch.no_grad():
        fly.z.copy_(torch.randn(12, generator=torch.Generator().manual_seed(1)))
        first = [fly.shift(layer).clone() for layer in (0, 1)]
        again = [fly.shift(layer) for layer in (0, 1, 0)]
    assert made == [0, 1]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert torch.allclose(first[1], fly.z.detach() @ real(spec, 1))

    fly.z.grad = torch.ones(12)
    torch.optim.SGD([fly.z], lr=0.5).step()
    with torch.no_grad():
        after = fly.shift(1)
    assert made == [0, 1, 1]
    assert torch.allclose(after, fly.z.detach() @ real(spec, 1)) and not torch.allclose(after, first[1])
