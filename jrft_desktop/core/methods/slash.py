"""SLaSh (Shared Layer Shift): one vector z, fixed random projections W_l, a shift z @ W_l in every layer.

The shift is input-independent, so after training it folds into the bias of the dense layer before it and the
merged model is the base architecture with different biases (no added latency)."""

from dataclasses import dataclass

from .base import Adaptation, Preset, ProjectedMethod
from .options import on_the_fly_option, position_option, projection_seed_option, vector_size_option
from .registry import register
from .rows import RowShifts, add_at_site
from .spec import MethodSpec


@dataclass(frozen=True)
class SLaShOptions:
    d: int | None = vector_size_option()
    position: str = position_option()
    projection_seed: int = projection_seed_option()
    on_the_fly: bool = on_the_fly_option()


class Shift(Adaptation):
    """SLaSh on one model: z and its projections, a hook per layer, and the position the shifts are added at."""

    def __init__(self, projected, hooks, position: str):
        super().__init__(modules={"projected": projected}, hooks=hooks, projection=projected)
        self.position = position


def _through(module, shift):
    """What a constant added to `module`'s input adds to its output: the shift through its weight (nn.Linear holds
    [outputs, inputs], GPT-2's Conv1D [inputs, outputs])."""
    return module.weight @ shift if hasattr(module, "in_features") else shift @ module.weight


class SLaSh(ProjectedMethod):
    name = "slash"
    summary = "SLaSh: one trainable vector z mapped by fixed random projections into a shift in every layer."
    # swept on held-out parts of the SST-2 and AG News training files (docs/benchmarks.md): 1e-2 reached both targets
    # in the fewest steps (3e-2 took twice as many on AG News, 1e-1 was unstable)
    default_lr = 1e-2
    options = SLaShOptions
    presets = (Preset("SLaSh d=1024 (paper)", {"d": 1024}), Preset("SLaSh d=4096", {"d": 4096}))
    budget_curve = True

    def bench_cases(self, budget):
        return tuple((f"{self.name}-{position}", MethodSpec(name=self.name, budget=budget, position=position))
                     for position in ("output", "intermediate", "attention"))

    def projection_width(self, info, position):
        return info.intermediate_size if position == "intermediate" else info.hidden_size

    def apply(self, model, plan, spec):
        projected = self.projection(model, plan, spec)
        site = model.family.shift_sites[plan.position]
        hooks = [add_at_site(layer, site, lambda hidden, index=index: projected.shift(index).to(hidden.dtype))
                 for index, layer in enumerate(model.layers())]
        return Shift(projected, hooks, plan.position)

    def row_shifts(self, model, state, spec, projections):
        """z @ W_l for every layer, as `ProjectedVector.shift` computes it (the same product, so the same values)."""
        z = state["projected.z"].float()
        weights = projections.weights(self.projection_spec(model, spec.position, spec.projection_seed, z.numel()))
        return RowShifts(spec.position, tuple(z @ weight for weight in weights))

    def per_example_gradients(self, model, inputs, labels, loss_fn):
        """Every example's exact gradient for z and the head from one ordinary batched backward pass.

        The shift s_l is the same for every token of an example, so the gradient of example i's loss for s_l is the
        sum over its tokens of the gradient where s_l is added. A zero probe [B, 1, width] added to each shift
        collects exactly that per example (examples do not interact in the forward pass), and since s_l = z W_l,
        example i's gradient of z is sum_l W_l g_li. The head's is the outer product of its output gradient and its
        input (summed over the tokens of a head on every token, a tagger's). This skips torch.func's per-example
        replay of the model, which cannot use fused attention."""
        import torch

        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        if trainable - {"head.bias"} != {"projected.z", "head.weight"} or not isinstance(model.head, torch.nn.Linear):
            return None
        projected = model.adaptation.projection
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
        # The head reads one state per example (a pooled head) or one per token (its gradients summed over them).
        grads = {"projected.z": z_grads, "head.weight": torch.einsum("b...o,b...i->boi", logit_grads, head_inputs)}
        if "head.bias" in trainable:
            grads["head.bias"] = logit_grads.reshape(batch, -1, logit_grads.shape[-1]).sum(1)
        return grads, losses.detach()

    def merge(self, model):
        import torch

        family, shift = model.family, model.adaptation
        projected, site, config = shift.projection, family.shift_sites[shift.position], model.base().config
        with torch.no_grad():
            for index, layer in enumerate(model.layers()):
                shift = projected.shift(index).detach()
                for path, through_weight in site.folds:
                    bias = family.merge_bias(layer, path, config)
                    bias += _through(layer.get_submodule(path), shift) if through_weight else shift
        model.adapt(Adaptation())  # the shifts are in the biases now: no hooks, no z
        return model.base()


register(SLaSh())
