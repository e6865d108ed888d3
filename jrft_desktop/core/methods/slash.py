"""SLaSh (Shared Layer Shift): one vector z, fixed random projections W_l, a shift z @ W_l in every layer.

The shift is input-independent, so after training it folds into the bias of the dense layer before it and the
merged model is the base architecture with different biases (no added latency)."""

from dataclasses import dataclass, field

from . import register
from .base import (
    Preset,
    ProjectedMethod,
    add_hook,
    on_the_fly_option,
    option,
    projection_seed_option,
    remove_hooks,
    vector_size_option,
)

POSITIONS = ("attention", "intermediate", "output")


@dataclass(frozen=True)
class SLaShOptions:
    d: int | None = vector_size_option()
    position: str = field(default="output", metadata=option(
        "Where SLaSh adds its shift in every layer: 'attention' (attention block output), 'intermediate' "
        "(MLP up-projection, before the activation) or 'output' (MLP output, before the LayerNorm).",
        choices=POSITIONS, label="Position"))
    projection_seed: int = projection_seed_option()
    on_the_fly: bool = on_the_fly_option()


def _width(model, position: str) -> int:
    return model.info.intermediate_size if position == "intermediate" else model.info.hidden_size


class SLaSh(ProjectedMethod):
    name = "slash"
    summary = "SLaSh: one trainable vector z mapped by fixed random projections into a shift in every layer."
    default_lr = 3e-2
    options = SLaShOptions
    presets = (Preset("SLaSh d=1024 (paper)", {"d": 1024}), Preset("SLaSh d=4096", {"d": 4096}))
    budget_curve = True

    def bench_cases(self, budget):
        from ..config import MethodSpec

        return tuple((f"{self.name}-{position}", MethodSpec(name=self.name, budget=budget, position=position))
                     for position in ("output", "intermediate", "attention"))

    def apply(self, model, plan, spec):
        layers = self.attach_projection(model, plan, spec, _width(model, plan.position))
        model.slash_position = plan.position
        projected, family = model.projected, model.family
        for index, layer in enumerate(layers):
            if plan.position == "output":
                def add_to_input(module, args, index=index):
                    return (args[0] + projected.shift(index).to(args[0].dtype), *args[1:])

                handle = layer.get_submodule(family.output_norm).register_forward_pre_hook(add_to_input)
            else:
                site = family.attention_out if plan.position == "attention" else family.up_proj

                def add_to_output(module, args, output, index=index):
                    return output + projected.shift(index).to(output.dtype)

                handle = layer.get_submodule(site).register_forward_hook(add_to_output)
            add_hook(model, handle)

    def per_example_gradients(self, model, inputs, labels, loss_fn):
        """Every example's exact gradient for z and the head from one ordinary batched backward pass.

        The shift s_l is the same for every token of an example, so the gradient of example i's loss for s_l is the
        sum over its tokens of the gradient where s_l is added. A zero probe [B, 1, width] added to each shift
        collects exactly that per example (examples do not interact in the forward pass), and since s_l = z W_l,
        example i's gradient of z is sum_l W_l g_li. The head's is the outer product of its output gradient and its
        input. This skips torch.func's per-example replay of the model, which cannot use fused attention."""
        import torch

        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        if trainable != {"projected.z", "head.weight", "head.bias"} or not isinstance(model.head, torch.nn.Linear):
            return None
        projected = model.projected
        batch = labels.shape[0]
        projected.probes = [projected.z.new_zeros(batch, 1, width, requires_grad=True)
                            for width in projected.spec.widths]
        pooled = []
        handle = model.head.register_forward_hook(lambda module, args, output: pooled.append(args[0].detach()))
        try:
            logits = model(**inputs)
        finally:
            handle.remove()
            probes, projected.probes = projected.probes, None
        losses = torch.func.vmap(lambda logit, label: loss_fn(logit[None], label[None]))(logits, labels)
        logit_grads, *shift_grads = torch.autograd.grad(losses.sum(), [logits, *probes])
        z_grads = sum(grad[:, 0].to(projected.z.dtype) @ projected.weight(layer).T
                      for layer, grad in enumerate(shift_grads))
        logit_grads, head_inputs = logit_grads.to(model.head.weight.dtype), pooled[0].to(model.head.weight.dtype)
        grads = {"projected.z": z_grads, "head.weight": logit_grads[:, :, None] * head_inputs[:, None, :],
                 "head.bias": logit_grads}
        return grads, losses.detach()

    def merge(self, model):
        import torch

        family, projected = model.family, model.projected
        with torch.no_grad():
            for index, layer in enumerate(model.layers()):
                shift = projected.shift(index).detach()
                up = layer.get_submodule(family.up_proj)
                up_bias = family.merge_bias(up, "MLP up-projection")
                down_bias = family.merge_bias(layer.get_submodule(family.down_proj), "MLP down-projection")
                if model.slash_position == "intermediate":
                    up_bias += shift
                elif model.slash_position == "output":
                    down_bias += shift
                else:  # after the attention LayerNorm: the shift enters the MLP input and its residual
                    up_bias += up.weight @ shift
                    down_bias += shift
        remove_hooks(model)
        del model.projected
        return model.base()


register(SLaSh())
