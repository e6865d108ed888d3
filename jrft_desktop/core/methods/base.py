"""What every finetuning method provides, and the shared plumbing (trainable state, hooks, counting)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..config import MethodSpec
from ..errors import ArtifactError, UserError
from ..limits import require_memory
from ..models import JrftModel
from ..projection import ProjectedVector, ProjectionSpec


@dataclass(frozen=True)
class MethodPlan:
    """A method resolved for one model and task, known before training starts."""

    method: str
    size_name: str | None  # "d", "rank" or "prompt_tokens"; None for methods without a size knob
    size: int | None
    method_params: int  # trainable parameters without the head
    head_params: int
    position: str | None = None
    note: str = ""

    @property
    def trainable_params(self) -> int:
        return self.method_params + self.head_params

    def to_dict(self) -> dict:
        return {**asdict(self), "trainable_params": self.trainable_params}


class Method:
    name: str = ""
    summary: str = ""  # one line, shown in `jrft methods` and the app
    default_lr: float = 1e-3
    foldable: bool = True  # can be merged into a stock model with the base architecture
    size_name: str | None = None  # the MethodSpec field that sizes this method
    default_size: int | None = None
    has_position: bool = False  # reads MethodSpec.position

    # --- sizing -------------------------------------------------------------------------------------------
    def params_for_size(self, size: int | None, model: JrftModel, spec: MethodSpec) -> int:
        raise NotImplementedError

    def size_for_budget(self, budget: int, model: JrftModel, spec: MethodSpec) -> int | None:
        return None

    def budget_note(self, spec: MethodSpec, model: JrftModel) -> str:
        """What the method gave up to fit spec.budget, if anything (shown with the plan)."""
        return ""

    def plan(self, spec: MethodSpec, model: JrftModel) -> MethodPlan:
        head_params = sum(p.numel() for p in model.head.parameters())
        size = getattr(spec, self.size_name) if self.size_name else None
        note = ""
        if size is None and self.size_name and spec.budget is not None:
            size = self.size_for_budget(spec.budget, model, spec)
            note = self.budget_note(spec, model)
        elif spec.budget is not None and not self.size_name:
            note = f"{self.name} has no size to fit a budget; the budget of {spec.budget} is ignored"
        if size is None:
            size = self.default_size
        if self.size_name and (size is None or size < 1):
            raise UserError(f"{self.name}: {self.size_name} must be a positive whole number (got {size}).")
        position = spec.position if self.has_position else None
        params = self.params_for_size(size, model, spec)
        if self.size_name:  # each trainable value also has a gradient and two AdamW moments: 16 bytes in all
            require_memory(16 * params, f"Training {self.name} with {self.size_name} = {size:,}",
                           f"use a smaller {self.size_name}")
        if spec.budget is not None and self.size_name and size == 1 and params > spec.budget:
            note = "; ".join(filter(None, (
                f"the smallest {self.name} on this model ({self.size_name} 1) trains {params:,} parameters, more "
                f"than the budget of {spec.budget:,}", note)))
        return MethodPlan(self.name, self.size_name, size, params, head_params, position, note)

    # --- training -----------------------------------------------------------------------------------------
    def apply(self, model: JrftModel, plan: MethodPlan, spec: MethodSpec) -> None:
        """Freeze what stays fixed and add what trains; afterwards only the method and the head need grads."""
        raise NotImplementedError

    def per_example_gradients(self, model: JrftModel, inputs: dict, labels: torch.Tensor, loss_fn):
        """({name: [B, *shape]}, per-example losses) by a faster exact route that this method's structure allows,
        or None: private training then takes the general route (torch.func, privacy.per_example_gradients)."""
        return None

    def projection_spec(self, model: JrftModel) -> ProjectionSpec | None:
        projected = getattr(model, "projected", None)
        return projected.spec if projected is not None else None

    def check_foldable(self) -> None:
        if not self.foldable:
            raise ArtifactError(
                f"{self.name} adds prompt tokens to the input, which cannot be folded into the weights of a stock "
                f"model; use the vector file with `jrft predict`, or train slash, which folds exactly."
            )

    def merge(self, model: JrftModel) -> nn.Module:
        """Fold the method into the base model (in place) and return that plain transformers model."""
        self.check_foldable()
        return model.base()


class ProjectedMethod(Method):
    """A method whose only trainable tensor (besides the head) is z, projected into every layer."""

    size_name = "d"
    default_size = 1024

    def params_for_size(self, size, model, spec):
        return size

    def size_for_budget(self, budget, model, spec):
        return budget

    def attach_projection(self, model: JrftModel, plan: MethodPlan, spec: MethodSpec, width: int) -> list[nn.Module]:
        """Freeze the backbone, add z with one projection of `width` per layer; returns the layers."""
        freeze(model.backbone)
        layers = model.layers()
        widths = tuple(width for _ in layers)
        # Projections held at once, 4 bytes per value: all of them (plus one being made), or on the fly the one
        # regenerated in forward, again in backward, and its unscaled draw.
        kept = 3 if spec.on_the_fly else len(widths) + 1
        require_memory(4 * plan.size * width * kept, f"The random projections of {self.name} for d = {plan.size:,}",
                       "use a smaller d" + ("" if spec.on_the_fly else ", or on-the-fly projections"))
        model.projected = ProjectedVector(ProjectionSpec(spec.projection_seed, plan.size, widths), spec.on_the_fly)
        return layers


def freeze(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ArtifactError(
            f"The saved weights do not fit this method and model (missing {len(missing)}, unexpected "
            f"{len(unexpected)}: {', '.join((missing + unexpected)[:3])})."
        )
    with torch.no_grad():
        for name, parameter in expected.items():
            value = state[name]
            if value.shape != parameter.shape:
                raise ArtifactError(f"Saved tensor {name} has shape {tuple(value.shape)}, the model expects "
                                    f"{tuple(parameter.shape)}.")
            parameter.copy_(value.to(parameter.dtype))


def remove_hooks(model: JrftModel) -> None:
    for handle in getattr(model, "method_hooks", []):
        handle.remove()
    model.method_hooks = []


def add_hook(model: JrftModel, handle) -> None:
    if not hasattr(model, "method_hooks"):
        model.method_hooks = []
    model.method_hooks.append(handle)
