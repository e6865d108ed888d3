"""VeRA through the `peft` library (Kopiczko et al., ICLR 2024): one pair of frozen random matrices A, B shared by
every layer, and per layer two trainable scaling vectors, so that the query and value weights change by
diag(b) B diag(d) A. The closest modern relative of SLaSh: shared fixed randomness, a few trainable numbers.

Each targeted weight costs its output width (b) plus the rank (d), so even rank 1 costs about 2 x layers x hidden
parameters. A, B are regenerated from the projection seed, never stored; the update folds into the weights."""

from dataclasses import dataclass

from .base import Adaptation, Preset, freeze
from .lora import PeftMethod, attention_targets, transposed_targets
from .options import projection_seed_option, rank_option
from .registry import register


@dataclass(frozen=True)
class VeRAOptions:
    rank: int | None = rank_option()
    projection_seed: int = projection_seed_option()


class VeRA(PeftMethod):
    name = "vera"
    summary = ("VeRA (peft): shared frozen random matrices; per layer, trainable vectors scale them into an update "
               "of the attention query and value weights.")
    default_lr = 1e-2
    options = VeRAOptions
    default_size = 256  # peft's default; VeRA wants far higher ranks than LoRA, the rank costs 1 parameter a layer
    presets = (Preset("VeRA r=256", {"rank": 256}),)

    def params_for_size(self, size, model, spec):
        from ..families import features

        return sum(features(m)[1] + size for m in attention_targets(model))

    def size_for_budget(self, budget, model, spec):
        from ..families import features

        targets = attention_targets(model)
        scaling = sum(features(m)[1] for m in targets)  # the b vectors: paid whatever the rank
        return max(1, round((budget - scaling) / len(targets)))

    def apply(self, model, plan, spec):
        from peft import VeraConfig, get_peft_model

        freeze(model.backbone)
        config = VeraConfig(r=plan.size, target_modules=list(model.family.lora_targets), vera_dropout=0.0,
                            projection_prng_key=spec.projection_seed, bias="none",
                            fan_in_fan_out=transposed_targets(model))
        return Adaptation(backbone=get_peft_model(model.backbone, config))


register(VeRA())
