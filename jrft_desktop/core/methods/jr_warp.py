"""JR-WARP: a prompt token z @ W_1 inserted into the input, and z @ W_l added to it in every later layer.

The token goes where the family puts prompts (after an encoder's [CLS]; first in a causal model, where every token
can attend to it).

The prompt position lengthens the sequence, so JR-WARP cannot fold into a stock model."""

from .base import Adaptation, Preset, ProjectedMethod
from .registry import register


class _FirstLayerPrompt:
    """The prompt token z @ W_1. Not a module of the model, so that z is named once ("projected.z") in the state."""

    def __init__(self, projected):
        self.projected = projected

    def __call__(self):
        return self.projected.shift(0).unsqueeze(0)


class JRWarp(ProjectedMethod):
    name = "jr-warp"
    summary = "JR-WARP: a prompt token built from z that every layer shifts by z @ W_l (cannot be merged)."
    default_lr = 3e-2
    foldable = False
    presets = (Preset("JR-WARP d=1024 (paper)", {"d": 1024}),)

    def apply(self, model, plan, spec):
        projected, position = self.projection(model, plan, spec), model.family.prompt_position
        hooks = []
        for index, layer in enumerate(model.layers()[:-1]):
            def shift_prompt(module, args, output, next_layer=index + 1):
                if model.prompts_cached:  # decoding over the key-value cache: the prompt is not in this input
                    return output
                hidden = output[0] if isinstance(output, tuple) else output
                hidden = hidden.clone()
                hidden[:, position] += projected.shift(next_layer).to(hidden.dtype)
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

            hooks.append(layer.register_forward_hook(shift_prompt))
        return Adaptation(modules={"projected": projected}, hooks=hooks, prompts=_FirstLayerPrompt(projected),
                          projection=projected)


register(JRWarp())
