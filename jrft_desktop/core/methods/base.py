"""What every finetuning method provides, and the shared plumbing (options, trainable state, hooks, counting).

Importing a method needs no torch: its declarations (options, presets, bench cases) are read by `config.py` (which
makes `MethodSpec` from the options), the CLI and the app before torch loads; torch is imported where a method is
applied. A method module never imports `config` at import time (config imports the registry)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..errors import ArtifactError
from ..limits import require_memory
from ..ranges import SEED_MAX, between

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..config import MethodSpec
    from ..models import JrftModel


# --- options: the MethodSpec settings a method reads ----------------------------------------------------------------
def option(help: str, *, size: bool = False, cli: str | None = None, aliases: tuple[str, ...] = (),
           choices: tuple | None = None, label: str | None = None, box_maximum: int | None = None,
           **valid: Any) -> dict[str, Any]:
    """The metadata of one option field. `help` is its only explanation (`jrft train --help`, the app's tooltip);
    `size`: it sizes the method (a budget sets it instead: `--budget` excludes its flag; at most one per method);
    `cli` its flag (default: --the-name-with-dashes) and `aliases` more flags; `choices` the values it takes; `label`
    its name in the app (a checkbox's text for a bool); `box_maximum` the largest value the app's box offers where
    the valid range has no top; `valid` a number's valid range (`ranges.between`: minimum=..., maximum=...,
    exclusive_minimum=True, ...), checked whenever a MethodSpec is made and shown in the help."""
    extra = {"size": size, "cli": cli, "aliases": tuple(aliases), "choices": choices, "label": label,
             "box_maximum": box_maximum}
    return {"help": help, **{key: value for key, value in extra.items() if value}, **between(**valid)}


def projection_seed_option():
    return field(default=0, metadata=option(
        "Seed of the method's fixed random draws (the projections W_l of slash and jr-warp, VeRA's shared matrices, "
        "WARP's first prompt tokens); recorded in every export.", label="Projection seed", minimum=0,
        maximum=SEED_MAX))


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that reads nothing but its name (and ignores a budget)."""


def option_flag(option_field) -> str:
    return option_field.metadata.get("cli") or "--" + option_field.name.replace("_", "-")


@dataclass(frozen=True)
class Preset:
    """A named choice of a method and its settings, offered by the app (`values`: MethodSpec values besides the name;
    the size, when not given, is the method's default)."""

    label: str
    values: Mapping[str, Any] = field(default_factory=dict)
    method: str = ""  # filled in from the method that declares it (methods.presets())

    def spec(self) -> MethodSpec:
        """What choosing the preset sets: its method at its default size and settings, but for the preset's values."""
        from ..config import MethodSpec
        from . import get_method

        method = get_method(self.method)
        size = {method.size_name: method.default_size} if method.size_name else {}
        return MethodSpec(name=self.method, **{**size, **self.values})


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
    on_the_fly: bool = False  # projections regenerated in forward and backward (asked for, or too big to keep)
    default_lr: float | None = None  # the learning rate a run takes when none is given (the method's, per family)

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
    options: type = NoOptions  # a frozen dataclass: the MethodSpec fields this method reads, with their help
    default_size: int | None = None  # of its size option, when it has one
    presets: tuple[Preset, ...] = ()  # offered by the app, in this order
    budget_curve: bool = False  # the bench's budget curve trains this method at each of its sizes
    reference: bool = False  # the ceiling the others are compared with (full finetuning): Δ and speed ratios
    leaves_base_unchanged: bool = False  # the base model computes as it was (the linear probe): its latency is the
    # base model's

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.options))

    @property
    def size_name(self) -> str | None:
        """The option that sizes this method (what a budget sets), e.g. "d"; None for a fixed-size method."""
        return next((f.name for f in fields(self.options) if f.metadata.get("size")), None)

    @property
    def has_position(self) -> bool:  # reads MethodSpec.position
        return "position" in self.option_names

    @property
    def title(self) -> str:
        """The summary's lead ('SLaSh', 'LoRA (peft)')."""
        return self.summary.partition(": ")[0] if ": " in self.summary else self.name

    def bench_cases(self, budget: int) -> tuple[tuple[str, MethodSpec], ...]:
        """(label, spec) of every case `jrft bench` compares for this method; the first is the quick bench's. By
        default one case: at the bench's budget when the method has a size."""
        from ..config import MethodSpec

        return ((self.name, MethodSpec(name=self.name, budget=budget if self.size_name else None)),)

    def default_lr_for(self, family) -> float:
        """The learning rate a run uses when none is given: the method's own, or the one measured on the family."""
        return family.method_lrs.get(self.name, self.default_lr)

    # --- sizing -------------------------------------------------------------------------------------------
    def params_for_size(self, size: int | None, model: JrftModel, spec: MethodSpec) -> int:
        raise NotImplementedError

    def size_for_budget(self, budget: int, model: JrftModel, spec: MethodSpec) -> int | None:
        return None

    def budget_note(self, spec: MethodSpec, model: JrftModel) -> str:
        """What the method gave up to fit spec.budget, if anything (shown with the plan)."""
        return ""

    def plan(self, spec: MethodSpec, model: JrftModel) -> MethodPlan:
        head_params = sum(p.numel() for p in model.head.parameters() if p.requires_grad)  # a frozen one: none
        size = getattr(spec, self.size_name) if self.size_name else None
        note = ""
        if size is None and self.size_name and spec.budget is not None:
            size = self.size_for_budget(spec.budget, model, spec)
            note = self.budget_note(spec, model)
        elif spec.budget is not None and not self.size_name:
            note = f"{self.name} has no size to fit a budget; the budget of {spec.budget} is ignored"
        if size is None:  # (a size or budget given is a positive whole number: MethodSpec checks its ranges)
            size = self.default_size
        position = spec.position if self.has_position else None
        params = self.params_for_size(size, model, spec)
        if self.size_name:  # each trainable value also has a gradient and two AdamW moments: 16 bytes in all
            require_memory(16 * params, f"Training {self.name} with {self.size_name} = {size:,}",
                           f"use a smaller {self.size_name}")
        if spec.budget is not None and self.size_name and size == 1 and params > spec.budget:
            note = "; ".join(filter(None, (
                f"the smallest {self.name} on this model ({self.size_name} 1) trains {params:,} parameters, more "
                f"than the budget of {spec.budget:,}", note)))
        return MethodPlan(self.name, self.size_name, size, params, head_params, position, note,
                          default_lr=self.default_lr_for(model.family))

    # --- training -----------------------------------------------------------------------------------------
    def apply(self, model: JrftModel, plan: MethodPlan, spec: MethodSpec) -> None:
        """Freeze what stays fixed and add what trains; afterwards only the method and the head need grads."""
        raise NotImplementedError

    def per_example_gradients(self, model: JrftModel, inputs: dict, labels: torch.Tensor, loss_fn):
        """({name: [B, *shape]}, per-example losses) by a faster exact route that this method's structure allows,
        or None: private training then takes the general route (torch.func, privacy.per_example_gradients)."""
        return None

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


def vector_size_option():
    # torchrun's own parser reads `--d` as an abbreviation of its --duplicate-* options, even after the command:
    # `--vector-size` says the same under torchrun.
    return field(default=None, metadata=option(
        "Size of the trainable vector z for slash / jr-warp (default 1024).", size=True, cli="--d",
        aliases=("--vector-size",), label="d (size of the vector z)", box_maximum=1_000_000, minimum=0,
        exclusive_minimum=True))


def on_the_fly_option():
    return field(default=False, metadata=option(
        "Regenerate each projection in forward and backward instead of keeping them in memory (slower, for big "
        "models).", label="Regenerate projections on the fly (less memory, slower)"))


@dataclass(frozen=True)
class ProjectionOptions:
    d: int | None = vector_size_option()
    projection_seed: int = projection_seed_option()
    on_the_fly: bool = on_the_fly_option()


class ProjectedMethod(Method):
    """A method whose only trainable tensor (besides the head) is z, projected into every layer."""

    options = ProjectionOptions
    default_size = 1024

    def params_for_size(self, size, model, spec):
        return size

    def size_for_budget(self, budget, model, spec):
        return budget

    def projection_width(self, model: JrftModel, spec: MethodSpec) -> int:
        """The width of each layer's projection W_l (d x width)."""
        return model.info.hidden_size

    def plan(self, spec: MethodSpec, model: JrftModel) -> MethodPlan:
        """As every method's, and on the fly when the stored projections would take over a quarter of what a run
        may use (a decoder's MLP width times d times its layers adds up): slower steps rather than a refusal."""
        from dataclasses import replace

        from ..formatting import format_bytes
        from ..limits import memory_limit

        plan = super().plan(spec, model)
        stored = 4 * plan.size * self.projection_width(model, spec) * (model.info.layers + 1)
        if spec.on_the_fly or stored <= memory_limit() // 4:
            return replace(plan, on_the_fly=spec.on_the_fly)
        note = (f"the projections would take {format_bytes(stored)}, so they are regenerated on the fly in every "
                "step instead (slower steps, far less memory)")
        return replace(plan, on_the_fly=True, note="; ".join(filter(None, (plan.note, note))))

    def attach_projection(self, model: JrftModel, plan: MethodPlan, spec: MethodSpec) -> list[nn.Module]:
        """Freeze the backbone, add z with one projection per layer; returns the layers."""
        freeze(model.backbone)
        layers = model.layers()
        width = self.projection_width(model, spec)
        widths = tuple(width for _ in layers)
        # Projections held at once, 4 bytes per value: all of them (plus one being made), or on the fly the one
        # regenerated in forward, again in backward, and its unscaled draw.
        kept = 3 if plan.on_the_fly else len(widths) + 1
        require_memory(4 * plan.size * width * kept, f"The random projections of {self.name} for d = {plan.size:,}",
                       "use a smaller d" + ("" if plan.on_the_fly else ", or on-the-fly projections"))
        from ..projection import ProjectedVector, ProjectionSpec

        model.projected = ProjectedVector(ProjectionSpec(spec.projection_seed, plan.size, widths), plan.on_the_fly)
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
    import torch

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
