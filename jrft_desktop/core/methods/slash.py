"""SLaSh (Shared Layer Shift): one vector z, fixed random projections W_l, a shift z @ W_l in every layer.

The shift is input-independent, so after training it folds into the bias of the dense layer before it and the
merged model is the base architecture with different biases (no added latency)."""

from dataclasses import dataclass

from .base import Adaptation, Measured, Preset, ProjectedMethod
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


_IDENTITY_SET = ("generate, SmolLM2-135M on the identity set, 10 questions held out at random: at the intermediate "
                 "position lr 1e-1 taught the new name (8 of 10, all 3 English; 120 steps of 8), the "
                 "output position did not at 1e-2 or 1e-1 (0 of 10); with 10 English questions held out (2 English "
                 "answers name it in training) no rate tried taught it in English (0 of 10 at 1e-1 and 3e-2)")


class SLaSh(ProjectedMethod):
    name = "slash"
    summary = "SLaSh: one trainable vector z mapped by fixed random projections into a shift in every layer."
    # Every default below was measured on held-out parts of the shared training files (docs/benchmarks.md, "The
    # defaults per task"; benchmarks/defaults_sweep.py); `source` is what the app's tooltips show.
    default_lr = 1e-2
    default_lr_source = ("classify on the bundled encoder, held-out SST-2 and AG News rows: 1e-2 reached 80 % / 85 % "
                         "in the fewest steps (3e-2 took twice as many on AG News, 1e-1 was unstable); trained to "
                         "convergence, 3e-2 ended within noise of it (SST-2 dev 84.4 against 84.1, CoLA 21.9 against "
                         "22.0)")
    default_position = Measured("output", "classify and tag on the bundled encoder: WNUT-17 test entity F1 32.6 at "
                                          "the output position against 32.0 at the intermediate one; SST-2 within "
                                          "a seed's spread")
    task_defaults = {
        "tag": {"lr": Measured(3e-2, "tag, held-out WNUT-17 validation: entity F1 48.7 at 3e-2 against 45.3 at 1e-2 "
                                     "after 300 steps")},
        "generate": {"lr": Measured(1e-1, _IDENTITY_SET), "position": Measured("intermediate", _IDENTITY_SET)},
    }
    options = SLaShOptions
    presets = (Preset("SLaSh d=1024 (paper)", {"d": 1024}), Preset("SLaSh d=4096", {"d": 4096}))
    budget_curve = True

    def bench_cases(self, budget):
        return tuple((f"{self.name}-{position}", MethodSpec(name=self.name, budget=budget, position=position))
                     for position in ("output", "intermediate", "attention"))

    def projection_width(self, info, position):
        return info.intermediate_size if position == "intermediate" else info.hidden_size

    def plan(self, spec, model):
        """As every projected method's, with a note when the position does not fold into the family's stock class
        (said before training: such a run exports as ONNX or its vector file, not a transformers folder)."""
        from dataclasses import replace

        plan = super().plan(spec, model)
        layer, config, family = model.layers()[0], model.base().config, model.info.family
        problem = model.family.fold_problem(layer, plan.position, config)
        folding = [position for position in model.family.shift_sites
                   if not model.family.fold_problem(layer, position, config)]
        if not problem and len(folding) == len(model.family.shift_sites):
            return plan
        if problem:
            instead = f"; {' and '.join(folding)} would" if folding else "; no slash position does on this model"
            note = (f"slash at the {plan.position} position does not fold into a stock {family} model ({problem}): "
                    f"the run exports as ONNX or its vector file, not as a transformers folder{instead}")
        else:
            others = [position for position in model.family.shift_sites if position not in folding]
            note = (f"on this {family} model only slash at {' and '.join(folding)} folds into its stock class; at "
                    f"{' or '.join(others)} a run exports as ONNX or its vector file")
        return replace(plan, note="; ".join(filter(None, (plan.note, note))))

    def folded_biases(self, model):
        return tuple(path for path, _ in model.family.shift_sites[model.adaptation.position].folds)

    def stock_problem(self, model, plan=None):
        position = plan.position if plan is not None else model.adaptation.position
        problem = model.family.fold_problem(model.layers()[0], position, model.base().config)
        return (f"SLaSh at the {position} position cannot be a stock {model.info.family} model: "
                f"{problem}. Export it as ONNX, which holds it exactly, or keep its vector file.") if problem else ""

    def apply(self, model, plan, spec):
        projected = self.projection(model, plan, spec)
        site = model.family.shift_sites[plan.position]
        hooks = [add_at_site(layer, site, lambda hidden, index=index: projected.shift(index))
                 for index, layer in enumerate(model.layers())]
        return Shift(projected, hooks, plan.position)

    def row_shifts(self, model, vectors, projections):
        """z @ W_l for every vector and layer, at the position each vector was planned with. The vectors that share
        their projections take one product per layer: W_l is read once, not once a vector (a thousand vectors load
        in seconds); a row of that product equals the vector's own z @ W_l up to the rounding of the sum."""
        import torch

        positions: dict = {}  # a spec's planned position ('auto': the one measured for the task)
        keys = []
        for state, spec in vectors:
            if spec not in positions:
                positions[spec] = self.plan(spec, model).position
            d = state["projected.z"].numel()
            keys.append((self.projection_spec(model, positions[spec], spec.projection_seed, d), positions[spec]))
        found: dict[int, RowShifts] = {}
        for projection, position in dict.fromkeys(keys):
            members = [index for index, key in enumerate(keys) if key == (projection, position)]
            z = torch.stack([vectors[index][0]["projected.z"].float() for index in members])
            products = [z @ weight for weight in projections.weights(projection)]
            found.update((index, RowShifts(position, tuple(product[row].clone() for product in products)))
                         for row, index in enumerate(members))
        return [found[index] for index in range(len(vectors))]

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
                    bias += site.spread(_through(layer.get_submodule(path), shift) if through_weight else shift,
                                        bias.numel())
        model.adapt(Adaptation())  # the shifts are in the biases now: no hooks, no z
        return model.base()


register(SLaSh())
