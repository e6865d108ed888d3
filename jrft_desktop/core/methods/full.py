"""Full finetuning: every weight trains (the accuracy ceiling, and the most memory and time)."""

from .base import Adaptation, Method, Preset
from .registry import register


class FullFinetuning(Method):
    name = "full"
    trains_base_weights = True
    summary = "Full finetuning: every weight of the model trains."
    default_lr = 5e-5
    presets = (Preset("Full finetuning"),)
    reference = True

    def params_for_size(self, size, model, spec):
        return sum(p.numel() for p in model.backbone.parameters())

    def apply(self, model, plan, spec):
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(True)
        return Adaptation()  # the model's own parameters train: nothing added


register(FullFinetuning())
