"""WARP: trainable prompt token embeddings inserted after the first token; the model stays frozen."""

import functools
from dataclasses import dataclass

from .base import Adaptation, Method, Preset, freeze
from .options import projection_seed_option, prompt_tokens_option
from .registry import register


@dataclass(frozen=True)
class WarpOptions:
    prompt_tokens: int | None = prompt_tokens_option()
    projection_seed: int = projection_seed_option()


@functools.cache
def _prompt_tokens_class() -> type:
    """PromptTokens, made on first use: it is an nn.Module, and importing this module (the options) needs no torch."""
    from torch import nn

    class PromptTokens(nn.Module):
        def __init__(self, initial):
            super().__init__()
            self.embeddings = nn.Parameter(initial.clone())

        def forward(self):
            return self.embeddings

    return PromptTokens


class Warp(Method):
    name = "warp"
    summary = "WARP: trainable prompt tokens added to the input (cannot be merged into a stock model)."
    default_lr = 3e-3
    foldable = False
    options = WarpOptions
    default_size = 8
    presets = (Preset("WARP, 8 prompt tokens", {"prompt_tokens": 8}),)

    def params_for_size(self, size, model, spec):
        return size * model.info.hidden_size

    def size_for_budget(self, budget, model, spec):
        return max(1, round(budget / model.info.hidden_size))

    def apply(self, model, plan, spec):
        import torch

        freeze(model.backbone)
        table = model.base().get_input_embeddings().weight
        generator = torch.Generator().manual_seed(spec.projection_seed)
        vocabulary = table.shape[0]
        first = min(1000, vocabulary // 2)  # skip the special and rare tokens at the start of most vocabularies
        token_ids = torch.randint(first, vocabulary, (plan.size,), generator=generator)
        prompts = _prompt_tokens_class()(table[token_ids].detach())  # start from real word embeddings
        return Adaptation(modules={"prompts": prompts}, prompts=prompts)


register(Warp())
