"""An 8-bit frozen base (issue 29): torchao's weight-only int8 on the base's frozen linear layers; int4 is left to a
CUDA GPU (torchao's int4 kernels need the 'mslk' package, with no CPU build); without torchao the option says what to
install. The torchao cases run where torchao is installed (it is optional)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from tiny_models import build_tiny_model

from jrft_desktop.core.build import build_model
from jrft_desktop.core.config import MethodSpec, ModelSpec
from jrft_desktop.core.errors import UserError
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.tasks import get_task
from jrft_desktop.core.train.quantization import quantize_base

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
HAS_TORCHAO = importlib.util.find_spec("torchao") is not None


@pytest.fixture(scope="module")
def slash_llama(tmp_path_factory):
    folder = build_tiny_model("llama", tmp_path_factory.mktemp("quantized") / "llama")

    def build():
        task = get_task("generate")
        loaded = load_backbone(ModelSpec(str(folder)), task)
        return build_model(ModelSpec(str(folder)), MethodSpec(name="slash", d=16), task, 1, loaded=loaded).model

    return build


def test_none_changes_nothing_and_int4_is_left_to_cuda(slash_llama):
    model = slash_llama()
    assert quantize_base(model, "none", CPU) is None
    with pytest.raises(UserError, match="int4 needs a CUDA GPU"):
        quantize_base(model, "int4", CPU)


@pytest.mark.skipif(HAS_TORCHAO, reason="torchao is installed")
def test_int8_without_torchao_says_what_to_install(slash_llama):
    with pytest.raises(UserError, match="pip install torchao"):
        quantize_base(slash_llama(), "int8", CPU)


@pytest.mark.skipif(not HAS_TORCHAO, reason="torchao is not installed (optional)")
def test_int8_quantises_the_frozen_linears_and_slash_still_trains(slash_llama):
    reference, model = slash_llama(), slash_llama()
    model.load_state_dict(reference.state_dict())
    ids = torch.randint(0, 500, (2, 24))
    mask = torch.ones_like(ids)
    targets = ids.clone()
    note = quantize_base(model, "int8", CPU)
    assert note and "int8" in note
    assert type(model.head.weight) is torch.nn.Parameter and model.head.weight.dtype == torch.float32
    with torch.no_grad():
        expected = reference(ids, mask, targets=targets)
        found = model(ids, mask, targets=targets)
    assert float(found[0]) == pytest.approx(float(expected[0]), rel=2e-2)  # int8 rounding of the weights
    sums = model(ids, mask, targets=targets)
    (sums[0] / sums[1]).backward()
    z = next(p for name, p in model.named_parameters() if p.requires_grad)
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
