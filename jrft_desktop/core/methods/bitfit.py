"""BitFit: only the bias terms of the pretrained model (and the head) train."""

from ..errors import ModelError
from .base import Adaptation, Method, Preset, freeze
from .registry import register


def _biases(module):
    return [p for name, p in module.named_parameters() if name.endswith("bias")]


class BitFit(Method):
    name = "bitfit"
    summary = "BitFit: only the model's bias terms train (a fixed count for a given model)."
    default_lr = 3e-3
    presets = (Preset("BitFit"),)

    def params_for_size(self, size, model, spec):
        count = sum(p.numel() for p in _biases(model.backbone))
        if not count:
            raise ModelError(f"BitFit trains a model's bias terms, and this {model.info.family} model has none; "
                             "choose slash (it adds its own shift) or lora.")
        return count

    def apply(self, model, plan, spec):
        freeze(model.backbone)
        for parameter in _biases(model.backbone):
            parameter.requires_grad_(True)
        return Adaptation()  # nothing added: the model's own biases train


register(BitFit())
