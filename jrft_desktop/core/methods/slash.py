"""SLaSh (Shared Layer Shift): one vector z, fixed random projections W_l, a shift z @ W_l in every layer.

The shift is input-independent, so after training it folds into the bias of the dense layer before it and the
merged model is the base architecture with different biases (no added latency)."""

import torch

from . import register
from .base import ProjectedMethod, add_hook, remove_hooks
from ..errors import ModelError


def _width(model, position: str) -> int:
    return model.info.intermediate_size if position == "intermediate" else model.info.hidden_size


class SLaSh(ProjectedMethod):
    name = "slash"
    summary = "SLaSh: one trainable vector z mapped by fixed random projections into a shift in every layer."
    default_lr = 3e-2
    has_position = True

    def apply(self, model, plan, spec):
        layers = self.attach_projection(model, plan, spec, _width(model, plan.position))
        model.slash_position = plan.position
        projected, layout = model.projected, model.layout
        for index, layer in enumerate(layers):
            if plan.position == "output":
                def add_to_input(module, args, index=index):
                    return (args[0] + projected.shift(index).to(args[0].dtype), *args[1:])

                handle = layer.get_submodule(layout.output_norm).register_forward_pre_hook(add_to_input)
            else:
                site = layout.attention_out if plan.position == "attention" else layout.up_proj

                def add_to_output(module, args, output, index=index):
                    return output + projected.shift(index).to(output.dtype)

                handle = layer.get_submodule(site).register_forward_hook(add_to_output)
            add_hook(model, handle)

    def merge(self, model):
        layout, projected = model.layout, model.projected
        with torch.no_grad():
            for index, layer in enumerate(model.layers()):
                shift = projected.shift(index).detach()
                up, down = layer.get_submodule(layout.up_proj), layer.get_submodule(layout.down_proj)
                if up.bias is None or down.bias is None:
                    raise ModelError("This model's MLP layers have no bias, so the SLaSh shift cannot be folded.")
                if model.slash_position == "intermediate":
                    up.bias += shift
                elif model.slash_position == "output":
                    down.bias += shift
                else:  # after the attention LayerNorm: the shift enters the MLP input and its residual
                    up.bias += up.weight @ shift
                    down.bias += shift
        remove_hooks(model)
        del model.projected
        return model.base()


register(SLaSh())
