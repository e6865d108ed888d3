"""LoRA through the `peft` library: low-rank updates of the attention query and value projections.

Rank 1 on query and value is the smallest usual LoRA. When a budget cannot pay for it, LoRA adapts the query
projections alone (a configuration the LoRA paper also studies), so that it is compared at the same budget."""

from dataclasses import dataclass

from .base import Adaptation, Method, Preset, freeze
from .options import rank_option
from .registry import register
from .spec import MethodSpec


@dataclass(frozen=True)
class LoRAOptions:
    rank: int | None = rank_option()


def attention_targets(model, names: tuple[str, ...] | None = None) -> list:
    """The attention projections called `names` in every layer (default: the family's LoRA / VeRA targets, e.g.
    query and value; GPT-2's fused query-key-value Conv1D)."""
    suffixes = tuple(f".{name}" for name in (names or model.family.lora_targets))
    return [m for name, m in model.base().named_modules()
            if name.endswith(suffixes) and getattr(getattr(m, "weight", None), "ndim", 0) == 2]


def transposed_targets(model) -> bool:
    """Whether the targets store their weight as [inputs, outputs] (GPT-2's Conv1D): peft's fan_in_fan_out."""
    return any(not hasattr(module, "in_features") for module in attention_targets(model))


def _rank_one_params(model, names: tuple[str, ...] | None = None) -> int:
    from ..families import features

    return sum(sum(features(m)) for m in attention_targets(model, names))


class PeftMethod(Method):
    """A method that wraps the backbone in a `peft` model; merging is peft's merge_and_unload."""

    def merge(self, model):
        model.adapt(Adaptation(backbone=model.backbone.merge_and_unload()))
        return model.backbone


class LoRA(PeftMethod):
    name = "lora"
    summary = "LoRA (peft): trainable low-rank updates of the attention query and value weights."
    default_lr = 1e-3
    options = LoRAOptions
    default_size = 8
    presets = (Preset("LoRA r=8", {"rank": 8}),)

    def bench_cases(self, budget):
        return ((self.name, MethodSpec(name=self.name, budget=budget)),
                (f"{self.name}-r8", MethodSpec(name=self.name, rank=8)))  # also at its usual rank

    def target_names(self, spec, model) -> tuple[str, ...]:
        """Query and value, or the query alone when a budget (with no rank given) is below rank 1 on both."""
        names = model.family.lora_targets
        if spec.rank is None and spec.budget is not None and spec.budget < _rank_one_params(model, names):
            return names[:1]
        return names

    def params_for_size(self, size, model, spec):
        return size * _rank_one_params(model, self.target_names(spec, model))

    def size_for_budget(self, budget, model, spec):
        if self.target_names(spec, model) != model.family.lora_targets:
            return 1  # the budget is below rank 1 on query and value, so below rank 2 on the query alone
        return round(budget / self.params_for_size(1, model, spec))

    def budget_note(self, spec, model):
        names = self.target_names(spec, model)
        if names == model.family.lora_targets:
            return ""
        return (f"lora adapts only the {names[0]} projections to fit the budget (rank 1 on "
                f"{' and '.join(model.family.lora_targets)} trains {_rank_one_params(model):,})")

    def apply(self, model, plan, spec):
        from peft import LoraConfig, get_peft_model

        freeze(model.backbone)
        config = LoraConfig(r=plan.size, lora_alpha=2 * plan.size, lora_dropout=0.0,
                            target_modules=list(self.target_names(spec, model)), bias="none",
                            fan_in_fan_out=transposed_targets(model))
        return Adaptation(backbone=get_peft_model(model.backbone, config))


register(LoRA())
