"""WARP: trainable prompt token embeddings inserted after the first token; the model stays frozen."""

import torch
from torch import nn

from . import register
from .base import Method, freeze


class PromptTokens(nn.Module):
    def __init__(self, initial: torch.Tensor):
        super().__init__()
        self.embeddings = nn.Parameter(initial.clone())

    def forward(self) -> torch.Tensor:
        return self.embeddings


class Warp(Method):
    name = "warp"
    summary = "WARP: trainable prompt tokens added to the input (cannot be merged into a stock model)."
    default_lr = 3e-3
    foldable = False
    size_name = "prompt_tokens"
    default_size = 8

    def params_for_size(self, size, model, spec):
        return size * model.info.hidden_size

    def size_for_budget(self, budget, model, spec):
        return max(1, round(budget / model.info.hidden_size))

    def apply(self, model, plan, spec):
        freeze(model.backbone)
        table = model.base().get_input_embeddings().weight
        generator = torch.Generator().manual_seed(spec.projection_seed)
        vocabulary = table.shape[0]
        first = min(1000, vocabulary // 2)  # skip the special and rare tokens at the start of most vocabularies
        token_ids = torch.randint(first, vocabulary, (plan.size,), generator=generator)
        model.prompts = PromptTokens(table[token_ids].detach())  # start from real word embeddings


register(Warp())
