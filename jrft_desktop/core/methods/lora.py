"""LoRA through the `peft` library: low-rank updates of the attention query and value projections."""

from torch import nn

from . import register
from .base import Method, freeze


def attention_targets(model) -> list[nn.Linear]:
    """The attention query and value projections of every layer (LoRA's and VeRA's targets)."""
    suffixes = tuple(f".{name}" for name in model.layout.lora_targets)
    return [m for name, m in model.base().named_modules() if isinstance(m, nn.Linear) and name.endswith(suffixes)]


class PeftMethod(Method):
    """A method that wraps the backbone in a `peft` model; merging is peft's merge_and_unload."""

    def merge(self, model):
        model.backbone = model.backbone.merge_and_unload()
        return model.backbone


class LoRA(PeftMethod):
    name = "lora"
    summary = "LoRA (peft): trainable low-rank updates of the attention query and value weights."
    default_lr = 1e-3
    size_name = "rank"
    default_size = 8

    def params_for_size(self, size, model):
        return size * sum(m.in_features + m.out_features for m in attention_targets(model))

    def size_for_budget(self, budget, model):
        per_rank = self.params_for_size(1, model)
        return max(1, round(budget / per_rank))

    def apply(self, model, plan, spec):
        from peft import LoraConfig, get_peft_model

        freeze(model.backbone)
        config = LoraConfig(r=plan.size, lora_alpha=2 * plan.size, lora_dropout=0.0,
                            target_modules=list(model.layout.lora_targets), bias="none")
        model.backbone = get_peft_model(model.backbone, config)


register(LoRA())
