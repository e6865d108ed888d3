"""The language-model loss without the whole vocabulary at every position (issue 29): the output layer runs only at
the counted positions, in chunks, and its sums and gradients equal those of the whole logits' cross-entropy within
1e-5 relative in fp32, on a tiny decoder with a large vocabulary (more values than one chunk holds)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jrft_desktop.core.tasks import generate
from jrft_desktop.core.tasks.generate import IGNORED, chunked_sums, token_losses

VOCABULARY, HIDDEN = 70_000, 24  # 2**24 values a chunk: 239 rows of 70,000, so a batch of 4 x 200 is 4 chunks


def _case(seed: int = 0, batch: int = 4, length: int = 200):
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(HIDDEN, VOCABULARY, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCABULARY, HIDDEN, generator=generator) * 0.3)
    head.requires_grad_(False)
    hidden = torch.randn(batch, length, HIDDEN, generator=generator)
    targets = torch.randint(0, VOCABULARY, (batch, length), generator=generator)
    prompt = torch.rand(batch, length, generator=generator) < 0.4  # prompt tokens and padding are not counted
    targets[prompt] = IGNORED
    return head, hidden, targets


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_the_chunks_are_many_and_the_sums_equal_the_whole_logits_loss():
    head, hidden, targets = _case()
    assert generate.chunk_rows(VOCABULARY) < 4 * 200 * 0.6 / 2  # several chunks
    whole_nll, whole_count, whole_right = token_losses(head(hidden), targets)
    nll, count, right = chunked_sums(head, hidden, targets)
    assert abs(float(nll) - float(whole_nll)) <= 1e-5 * abs(float(whole_nll))
    assert int(count) == int(whole_count) and int(right) == int(whole_right)


def test_the_gradients_equal_the_whole_logits_gradients():
    head, hidden, targets = _case(seed=1)
    head.weight.requires_grad_(True)  # a trained output layer too (full finetuning)
    states = hidden.clone().requires_grad_(True)
    nll, count, _ = token_losses(head(states), targets)
    (nll / count).backward()
    expected_hidden, expected_weight = states.grad.clone(), head.weight.grad.clone()
    head.weight.grad, states.grad = None, None
    sums = chunked_sums(head, states, targets)
    (sums[0] / sums[1]).backward()
    assert _relative(states.grad, expected_hidden) <= 1e-5
    assert _relative(head.weight.grad, expected_weight) <= 1e-5


def test_a_bias_and_a_wrapped_head_give_the_same_sums():
    head, hidden, targets = _case(seed=2, length=60)
    biased = nn.Linear(HIDDEN, VOCABULARY)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
    biased.bias.requires_grad_(True)
    whole = token_losses(biased(hidden), targets)[0]
    wrapped = nn.Sequential(biased)  # not an nn.Linear: chunks through autograd as usual
    for layer in (biased, wrapped):
        assert abs(float(chunked_sums(layer, hidden, targets)[0].detach()) - float(whole)) <= 1e-5 * float(whole)
    chunked_sums(biased, hidden, targets)[0].backward()
    chunked = biased.bias.grad.clone()
    biased.bias.grad = None
    token_losses(biased(hidden), targets)[0].backward()
    assert _relative(chunked, biased.bias.grad) <= 1e-5


def test_nothing_counted_is_a_zero_loss():
    head, hidden, targets = _case(seed=3, length=20)
    targets[:] = IGNORED
    assert chunked_sums(head, hidden, targets).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("seed", [4])
def test_bf16_autocast_stays_close(seed):
    """Under bf16 autocast the product computes in bf16 as the whole logits did; the fp32 cross-entropy per chunk
    keeps the sum within bf16's rounding of the logits (1e-2 relative)."""
    head, hidden, targets = _case(seed=seed, length=60)
    reference = float(token_losses(head(hidden), targets)[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = float(chunked_sums(head, hidden, targets)[0])
    assert abs(chunked - reference) <= 1e-2 * reference
