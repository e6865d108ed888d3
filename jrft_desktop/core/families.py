"""Everything that differs between architecture families, in one place.

A `Family` names where things live inside one layer (the modules methods hook into), how the layer is normalised,
which attention projections LoRA / VeRA target (PEFT's per-family target maps), how sizes are read from the
config, which biases a merge folds into, and how each task's trained head maps onto the family's stock class.
The rest of the core asks the family of a model; it never compares family names."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import ModelError


@dataclass(frozen=True)
class ConfigSizes:
    """The config attributes that hold a family's sizes (BERT and DistilBERT name them differently)."""

    layers: str = "num_hidden_layers"
    hidden: str = "hidden_size"
    intermediate: str = "intermediate_size"

    def read(self, config) -> tuple[int, int, int]:
        """(layers, hidden size, MLP width) of a config; a missing attribute is a clear error."""
        values = []
        for attribute in (self.layers, self.hidden, self.intermediate):
            value = getattr(config, attribute, None)
            if not isinstance(value, int):
                raise ModelError(f"This {config.model_type} configuration has no {attribute!r}; it is not a "
                                 "complete model configuration.")
            values.append(value)
        return values[0], values[1], values[2]


class StockHead:
    """How a trained linear head on the pooled state becomes the head of the family's stock class."""

    def write(self, stock: nn.Module, base: nn.Module, head: nn.Linear, last_layer: nn.Module,
              family: Family) -> None:
        raise NotImplementedError


class LinearClassifier(StockHead):
    """BERT: pooler, then `classifier`, a linear layer: the head is copied as it is."""

    def write(self, stock, base, head, last_layer, family):
        stock.classifier.weight.copy_(head.weight)
        stock.classifier.bias.copy_(head.bias)


class DenseTanhClassifier(StockHead):
    """RoBERTa: `classifier.dense` + tanh + `classifier.out_proj`; dense + tanh is the pooler the head read."""

    def write(self, stock, base, head, last_layer, family):
        stock.classifier.dense.load_state_dict(base.pooler.dense.state_dict())
        stock.classifier.out_proj.weight.copy_(head.weight)
        stock.classifier.out_proj.bias.copy_(head.bias)


class ReluClassifier(StockHead):
    """DistilBERT: classifier(relu(pre_classifier(x))) on the first token. Identity plus an offset that keeps every
    coordinate positive undoes the ReLU exactly: a LayerNorm output satisfies |x_i| <= |g_i| sqrt(H) + |b_i|."""

    def write(self, stock, base, head, last_layer, family):
        norm = last_layer.get_submodule(family.output_norm)
        offset = norm.weight.detach().abs() * math.sqrt(norm.weight.numel()) + norm.bias.detach().abs() + 1.0
        stock.pre_classifier.weight.copy_(torch.eye(offset.numel()))
        stock.pre_classifier.bias.copy_(offset)
        stock.classifier.weight.copy_(head.weight)
        stock.classifier.bias.copy_(head.bias - head.weight @ offset)


@dataclass(frozen=True)
class Family:
    """Where things live inside one layer of a family (paths relative to a layer) and how it maps to stock."""

    layers: str  # the list of layers, relative to the base model
    attention_out: str  # module returning the attention block's output (after its LayerNorm when post-norm)
    up_proj: str  # MLP first dense (its output is the `intermediate` position)
    down_proj: str  # MLP second dense
    output_norm: str  # LayerNorm after the MLP residual (the `output` shift is added to its input)
    lora_targets: tuple[str, ...]  # attention query / value projections
    stock_heads: dict[str, StockHead]  # task name -> how that task's head maps onto the stock class
    norm: str = "post"  # LayerNorm after each residual add ("post", BERT) or before each block ("pre")
    sizes: ConfigSizes = field(default_factory=ConfigSizes)
    positions_after_padding: bool = False  # RoBERTa-style: position ids start after the padding index

    def layer_modules(self, base: nn.Module) -> list[nn.Module]:
        return list(base.get_submodule(self.layers))

    def stock_head(self, task: str) -> StockHead:
        try:
            return self.stock_heads[task]
        except KeyError:
            raise ModelError(f"A merged {task} model of this family cannot be written yet (known: "
                             f"{', '.join(sorted(self.stock_heads))}).") from None

    @staticmethod
    def merge_bias(module: nn.Module, what: str) -> torch.Tensor:
        """The bias of `module` that a merge folds a constant shift into; a clear error when there is none."""
        bias = getattr(module, "bias", None)
        if bias is None:
            raise ModelError(f"This model's {what} layers have no bias, so the shift cannot be folded into it.")
        return bias


_BERT_LIKE = dict(
    layers="encoder.layer", attention_out="attention.output", up_proj="intermediate.dense",
    down_proj="output.dense", output_norm="output.LayerNorm", lora_targets=("query", "value"),
)
_ROBERTA = Family(**_BERT_LIKE, stock_heads={"classify": DenseTanhClassifier()}, positions_after_padding=True)
FAMILIES: dict[str, Family] = {  # keyed by the config's model_type
    "bert": Family(**_BERT_LIKE, stock_heads={"classify": LinearClassifier()}),
    "roberta": _ROBERTA,
    "xlm-roberta": _ROBERTA,
    "camembert": _ROBERTA,
    "distilbert": Family(
        layers="transformer.layer", attention_out="sa_layer_norm", up_proj="ffn.lin1", down_proj="ffn.lin2",
        output_norm="output_layer_norm", lora_targets=("q_lin", "v_lin"), stock_heads={"classify": ReluClassifier()},
        sizes=ConfigSizes(layers="n_layers", hidden="dim", intermediate="hidden_dim"),
    ),
}


def family_of(model_type: str, model_name: str) -> Family:
    """The family of a config's model_type; an unsupported one is a clear error, never a fallback."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise ModelError(f"{model_name} is a {model_type!r} model; supported families: "
                         f"{', '.join(sorted(FAMILIES))}.") from None
