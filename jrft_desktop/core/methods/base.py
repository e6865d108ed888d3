"""What every finetuning method provides, what it adds to a model (`Adaptation`), and the shared plumbing
(trainable state, counting, the projections' memory).

Importing a method needs no torch: its declarations (options, presets, bench cases) are read by the config, the
CLI and the app before torch loads; torch is imported where a method is applied."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from ..errors import ArtifactError
from ..limits import require_memory
from .options import AUTO_POSITION, NoOptions, ProjectionOptions
from .spec import MethodSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..models import JrftModel, ModelInfo
    from ..projection import ProjectedVector, ProjectionCache, ProjectionSpec
    from .rows import RowShifts

FLOAT = 4  # bytes of one float32 value


class Adaptation:
    """What a method added to one model, kept by the model (`JrftModel.adapt`) and read back only by the method that
    made it: modules registered on the model under these names (so they train and save with it: "projected.z"),
    forward hooks, the prompt tokens it inserts into the input (WARP, JR-WARP: a callable giving [P, H]), a
    replacement backbone (a PEFT wrapper) and the projection of z, whose spec the vector file records."""

    def __init__(self, *, modules: dict[str, nn.Module] | None = None, hooks=(), prompts=None,
                 backbone: nn.Module | None = None, projection: ProjectedVector | None = None):
        self.modules = dict(modules or {})
        self.hooks = list(hooks)
        self.prompts = prompts
        self.backbone = backbone
        self.projection = projection

    def remove_hooks(self) -> None:
        for handle in self.hooks:
            handle.remove()
        self.hooks = []


@dataclass(frozen=True)
class Preset:
    """A named choice of a method and its settings, offered by the app (`values`: MethodSpec values besides the name;
    the size, when not given, is the method's default)."""

    label: str
    values: Mapping[str, Any] = field(default_factory=dict)
    method: str = ""  # filled in from the method that declares it (methods.presets())

    def spec(self) -> MethodSpec:
        """What choosing the preset sets: its method at its default size and settings, but for the preset's values."""
        from .registry import get_method

        method = get_method(self.method)
        size = {method.size_name: method.default_size} if method.size_name else {}
        return MethodSpec(name=self.method, **{**size, **self.values})


@dataclass(frozen=True)
class Measured:
    """A default setting and the measurement that chose it (the app's tooltips show `source`)."""

    value: Any
    source: str


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
    default_lr: float | None = None  # the learning rate a run takes when none is given (per task, family, method)
    default_lr_source: str = ""  # where that rate comes from
    position_source: str = ""  # where an 'auto' position came from (empty: the position was chosen)

    @property
    def trainable_params(self) -> int:
        return self.method_params + self.head_params

    def resolved(self, spec: MethodSpec) -> MethodSpec:
        """`spec` as this plan resolved it (the method's name, an 'auto' position), as a vector file records it."""
        return replace(spec, name=self.method, position=self.position or spec.position)

    def to_dict(self) -> dict:
        return {**asdict(self), "trainable_params": self.trainable_params}


class Method:
    name: str = ""
    summary: str = ""  # one line, shown in `jrft methods` and the app
    default_lr: float = 1e-3
    default_lr_source: str = "the usual rate for this kind of method"
    # settings measured per task, which win over the family's and the method's own: task name -> {setting: Measured}
    task_defaults: Mapping[str, Mapping[str, Measured]] = {}
    default_position: Measured | None = None  # where a method with positions acts when the task measured none
    foldable: bool = True  # can be merged into a stock model with the base architecture
    options: type = NoOptions  # a frozen dataclass: the MethodSpec fields this method reads, with their help
    default_size: int | None = None  # of its size option, when it has one
    presets: tuple[Preset, ...] = ()  # offered by the app, in this order
    budget_curve: bool = False  # the bench's budget curve trains this method at each of its sizes
    reference: bool = False  # the ceiling the others are compared with (full finetuning): Δ and speed ratios
    trains_base_weights: bool = False  # its trainable values are the base model's own weights (full finetuning)
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
        return ((self.name, MethodSpec(name=self.name, budget=budget if self.size_name else None)),)

    def default_lr_for(self, model: JrftModel) -> Measured:
        """The learning rate a run uses when none is given: the one measured for the model's task, else for its
        family, else the method's own."""
        measured = self.task_defaults.get(model.task.name, {}).get("lr")
        if measured is not None:
            return measured
        if self.name in model.family.method_lrs:
            return Measured(model.family.method_lrs[self.name], model.family.method_lr_source)
        return Measured(self.default_lr, self.default_lr_source)

    def position_for(self, spec: MethodSpec, model: JrftModel) -> Measured | None:
        """Where the method acts (MethodSpec.position), 'auto' resolved: the position measured for the model's
        task, else for its family, else the method's default, the first of them that folds into the family's stock
        class (`Family.fold_problem`); None for a method without positions."""
        if not self.has_position:
            return None
        if spec.position != AUTO_POSITION:
            return Measured(spec.position, "")
        family = model.family
        candidates = [choice for choice in (
            self.task_defaults.get(model.task.name, {}).get("position"),
            Measured(family.default_position, family.position_source) if family.default_position else None,
            self.default_position) if choice is not None]
        layer, config = model.layers()[0], model.base().config
        folding = [choice for choice in candidates if not family.fold_problem(layer, choice.value, config)]
        return folding[0] if folding else candidates[0] if candidates else None

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
        position = self.position_for(spec, model)
        params = self.params_for_size(size, model, spec)
        if self.size_name:  # each trainable value also has a gradient and two AdamW moments: 16 bytes in all
            require_memory(16 * params, f"Training {self.name} with {self.size_name} = {size:,}",
                           f"use a smaller {self.size_name}")
        if spec.budget is not None and self.size_name and size == 1 and params > spec.budget:
            note = "; ".join(filter(None, (
                f"the smallest {self.name} on this model ({self.size_name} 1) trains {params:,} parameters, more "
                f"than the budget of {spec.budget:,}", note)))
        lr = self.default_lr_for(model)
        return MethodPlan(self.name, self.size_name, size, params, head_params, position.value if position else None,
                          note,
                          default_lr=lr.value, default_lr_source=lr.source,
                          position_source=position.source if position else "")

    # --- training -----------------------------------------------------------------------------------------
    def apply(self, model: JrftModel, plan: MethodPlan, spec: MethodSpec) -> Adaptation:
        """Freeze what stays fixed and add what trains; afterwards only the method and the head need grads. Returns
        what it added, which the model keeps (`JrftModel.adapt`)."""
        raise NotImplementedError

    def fixed_memory(self, plan: MethodPlan, info: ModelInfo) -> int:
        """Bytes the method holds besides the model and the trainable values (a projected method's projections),
        for the memory estimate made before training."""
        return 0

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

    def stock_problem(self, model: JrftModel, plan: MethodPlan | None = None) -> str:
        """Why this trained model, folded, cannot be a stock transformers class of its family although the method
        folds ('' when it can): SLaSh at a position whose projection has no bias the stock class can hold. `plan`:
        ask before the method is applied (what `jrft methods` and the Method page show)."""
        return ""

    def folded_biases(self, model: JrftModel) -> tuple[str, ...]:
        """The projections (paths within a layer) into whose biases a merge folds what the method added, for a form
        that must hold those biases (llama.cpp's graphs add some projections' biases only)."""
        return ()

    def merge(self, model: JrftModel) -> nn.Module:
        """Fold the method into the base model (in place) and return that plain transformers model."""
        self.check_foldable()
        return model.base()

    # --- serving ------------------------------------------------------------------------------------------
    def row_shifts(self, model: JrftModel, vectors: Sequence[tuple[dict[str, torch.Tensor], MethodSpec]],
                   projections: ProjectionCache) -> list[RowShifts] | None:
        """What each of these vectors (its saved tensors and settings; `model`: the base model with their task) adds
        to its own rows of a batch of the base model (`rows.RowShifts`), computed once, so that a server runs the
        rows of many vectors in one batch. None: this method changes the model in a way rows cannot mix, so each of
        its vectors needs a model of its own."""
        return None




class ProjectedMethod(Method):
    """A method whose only trainable tensor (besides the head) is z, projected into every layer."""

    options: type = ProjectionOptions
    default_size = 1024

    def params_for_size(self, size, model, spec):
        return size

    def size_for_budget(self, budget, model, spec):
        return budget

    def projection_width(self, info: ModelInfo, position: str | None) -> int:
        """The width of each layer's projection W_l (d x width)."""
        return info.hidden_size

    def projection_bytes(self, plan: MethodPlan, info: ModelInfo, on_the_fly: bool) -> int:
        """The projections held at once: all of them (plus one being made), or on the fly the one regenerated in
        forward, again in backward, and its unscaled draw."""
        kept = 3 if on_the_fly else info.layers + 1
        return FLOAT * _size_of(plan) * self.projection_width(info, plan.position) * kept

    def fixed_memory(self, plan, info):
        return self.projection_bytes(plan, info, plan.on_the_fly)

    def plan(self, spec: MethodSpec, model: JrftModel) -> MethodPlan:
        """As every method's, and on the fly when the stored projections would take over a quarter of what a run
        may use (a decoder's MLP width times d times its layers adds up): slower steps rather than a refusal."""
        from dataclasses import replace

        from ..formatting import format_bytes
        from ..limits import memory_limit

        plan = super().plan(spec, model)
        stored = self.projection_bytes(plan, model.info, on_the_fly=False)
        if spec.on_the_fly or stored <= memory_limit() // 4:
            return replace(plan, on_the_fly=spec.on_the_fly)
        note = (f"the projections would take {format_bytes(stored)}, so they are regenerated on the fly in every "
                "step instead (slower steps, far less memory)")
        return replace(plan, on_the_fly=True, note="; ".join(filter(None, (plan.note, note))))

    def projection(self, model: JrftModel, plan: MethodPlan, spec: MethodSpec) -> ProjectedVector:
        """Freeze the backbone; z with one projection per layer (the caller registers it as "projected")."""
        from ..projection import ProjectedVector

        freeze(model.backbone)
        require_memory(self.projection_bytes(plan, model.info, plan.on_the_fly),
                       f"The random projections of {self.name} for d = {_size_of(plan):,}",
                       "use a smaller d" + ("" if plan.on_the_fly else ", or on-the-fly projections"))
        return ProjectedVector(self.projection_spec(model, plan.position, spec.projection_seed, _size_of(plan)),
                               plan.on_the_fly)

    def projection_spec(self, model: JrftModel, position: str | None, seed: int, d: int) -> ProjectionSpec:
        """The projections of z (size `d`) into every layer of `model`."""
        from ..projection import ProjectionSpec

        widths = tuple(self.projection_width(model.info, position) for _ in model.layers())
        return ProjectionSpec(seed, d, widths)


def _size_of(plan: MethodPlan) -> int:
    """The size of a sized method's plan (which `Method.plan` always fills in)."""
    if plan.size is None:
        raise ValueError(f"{plan.method}'s plan has no size")
    return plan.size


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
