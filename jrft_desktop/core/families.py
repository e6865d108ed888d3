"""Everything that differs between architecture families, in one place.

A `Family` names where things live inside one layer (the modules methods hook into), how the layer is normalised,
which attention projections LoRA / VeRA target (PEFT's per-family target maps), how sizes are read from the
config, which biases a merge folds into, and how each task's trained head maps onto the family's stock class.
Encoders (BERT, RoBERTa, DistilBERT) are post-LayerNorm; decoders (GPT-2, Llama, Qwen2, Mistral) pre-LayerNorm and
causal. The rest of the core asks the family of a model; it never compares family names."""

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
    intermediate_per_hidden: int | None = None  # GPT-2: an unset MLP width means this many times the hidden size
    heads: str = "num_attention_heads"

    def read(self, config) -> tuple[int, int, int, int]:
        """(layers, hidden size, MLP width, attention heads) of a config; a missing attribute is a clear error."""
        values = []
        for attribute in (self.layers, self.hidden, self.intermediate, self.heads):
            value = getattr(config, attribute, None)
            if value is None and attribute == self.intermediate and self.intermediate_per_hidden:
                value = self.intermediate_per_hidden * values[1]
            if not isinstance(value, int):
                raise ModelError(f"This {config.model_type} configuration has no {attribute!r}; it is not a "
                                 "complete model configuration.")
            values.append(value)
        return values[0], values[1], values[2], values[3]


class StockHead:
    """How a trained linear head on the pooled state becomes the head of the family's stock class."""

    # base-model weights (name prefixes) that the stock head holds instead, or that the stock class leaves out because
    # the trained model never reads them
    consumes: tuple[str, ...] = ()

    def write(self, stock: nn.Module, base: nn.Module, head: nn.Linear, last_layer: nn.Module,
              family: Family) -> None:
        raise NotImplementedError


class LinearClassifier(StockHead):
    """One linear layer, `classifier` (or `attribute`), on what the head read: BERT's pooled first token, or every
    token of a stock token classifier. The head is copied as it is (a head without bias as a zero bias)."""

    def __init__(self, attribute: str = "classifier", consumes: tuple[str, ...] = ()):
        self.attribute = attribute
        self.consumes = consumes

    def write(self, stock, base, head, last_layer, family):
        target = getattr(stock, self.attribute)
        target.weight.copy_(head.weight)
        if target.bias is not None:
            target.bias.copy_(head.bias if head.bias is not None else torch.zeros_like(target.bias))


class DenseTanhClassifier(StockHead):
    """RoBERTa: `classifier.dense` + tanh + `classifier.out_proj`; dense + tanh is the pooler the head read."""

    consumes = ("pooler.",)

    def write(self, stock, base, head, last_layer, family):
        stock.classifier.dense.load_state_dict(base.pooler.dense.state_dict())
        stock.classifier.out_proj.weight.copy_(head.weight)
        stock.classifier.out_proj.bias.copy_(head.bias)


class ReluClassifier(StockHead):
    """DistilBERT: classifier(relu(pre_classifier(x))) on the first token. Identity plus an offset that keeps every
    coordinate positive undoes the ReLU exactly: a LayerNorm output satisfies |x_i| <= |g_i| sqrt(H) + |b_i|."""

    def __init__(self, last_norm: str):
        self.last_norm = last_norm  # the LayerNorm that ends a layer (so the last layer's output), within a layer

    def write(self, stock, base, head, last_layer, family):
        norm = last_layer.get_submodule(self.last_norm)
        offset = norm.weight.detach().abs() * math.sqrt(norm.weight.numel()) + norm.bias.detach().abs() + 1.0
        stock.pre_classifier.weight.copy_(torch.eye(offset.numel()))
        stock.pre_classifier.bias.copy_(offset)
        stock.classifier.weight.copy_(head.weight)
        stock.classifier.bias.copy_(head.bias - head.weight @ offset)


class ScoreHead(StockHead):
    """Decoders: `score`, a linear layer without bias on the last non-padding token (as the head was trained)."""

    def write(self, stock, base, head, last_layer, family):
        stock.score.weight.copy_(head.weight)


class LanguageModelHead(StockHead):
    """Decoders generating text: the model's own output layer, frozen in training, copied as it is (a tied one is the
    input embeddings, already in place)."""

    def write(self, stock, base, head, last_layer, family):
        stock.get_output_embeddings().weight.copy_(head.weight)


@dataclass(frozen=True)
class ShiftSite:
    """Where one SLaSh position adds its constant shift inside a layer, and which biases it folds into.

    `adds_to` is "output" (the module's output) or "input" (its first input); each fold is (module, through): the
    shift goes into that module's bias as it is, or first through its weight (when it enters the module's input)."""

    module: str
    adds_to: str
    folds: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class BiasSwitch:
    """A stock config flag that gives a group of a layer's projections biases (Llama's `attention_bias`,
    `mlp_bias`): a merge that needs one of them turns the flag on and gives the whole group zero biases."""

    flag: str
    modules: tuple[str, ...]  # relative to a layer


@dataclass(frozen=True)
class Family:
    """Where things live inside one layer of a family (paths relative to a layer) and how it maps to stock."""

    layers: str  # the list of layers, relative to the base model
    shift_sites: dict[str, ShiftSite]  # SLaSh position -> where its shift goes and folds
    lora_targets: tuple[str, ...]  # attention query / value projections (PEFT's target modules for the family)
    stock_heads: dict[str, StockHead]  # task name -> how that task's head maps onto the stock class
    norm: str = "post"  # LayerNorm after each residual add ("post", BERT) or before each block ("pre", decoders)
    causal: bool = False  # each token sees only the tokens before it (decoders)
    sizes: ConfigSizes = field(default_factory=ConfigSizes)
    positions_after_padding: bool = False  # RoBERTa-style: position ids start after the padding index
    bias_switches: dict[str, BiasSwitch] = field(default_factory=dict)  # module -> the flag that gives it a bias
    merged_model_type: str | None = None  # a merge that turned a switch on is written as this model type
    native_bias_flags: tuple[str, ...] = ()  # switches of merged_model_type that this family's weights already need
    method_lrs: dict[str, float] = field(default_factory=dict)  # learning rates measured on this family
    # the llama.cpp architecture its merged language model is written as in GGUF (None: no GGUF form)
    gguf_architecture: str | None = None

    @property
    def prompt_position(self) -> int:
        """Where prompt tokens go: after the first ([CLS]) token of an encoder; first of all in a causal model, so
        that every token attends to them."""
        return 0 if self.causal else 1

    @property
    def stock_pooling(self) -> str:
        """The token a stock classifier of the family reads: the first (through the pooler), or a decoder's last."""
        return "last" if self.causal else "cls"

    @property
    def head_bias(self) -> bool:
        """Whether a classification head has a bias: a decoder's stock `score` layer has none."""
        return not self.causal

    def layer_modules(self, base: nn.Module) -> list[nn.Module]:
        return list(base.get_submodule(self.layers))

    def stock_head(self, task: str) -> StockHead:
        try:
            return self.stock_heads[task]
        except KeyError:
            raise ModelError(f"A merged {task} model of this family cannot be written yet (known: "
                             f"{', '.join(sorted(self.stock_heads))}).") from None

    def merge_bias(self, layer: nn.Module, path: str, config) -> torch.Tensor:
        """The bias of `layer`'s module `path` that a merge folds a constant shift into. A module without one gets
        it through its family's stock config flag (set on `config`, the whole group given zero biases); without
        such a flag it is a clear error."""
        module = layer.get_submodule(path)
        if getattr(module, "bias", None) is not None:
            return module.bias
        switch = self.bias_switches.get(path)
        if switch is None:
            raise ModelError(f"This model's {path} layers have no bias and no stock setting adds one, so the shift "
                             "cannot be folded into them.")
        for name in switch.modules:
            target = layer.get_submodule(name)
            if target.bias is None:
                target.bias = nn.Parameter(target.weight.new_zeros(target.weight.shape[0]), requires_grad=False)
        setattr(config, switch.flag, True)
        return module.bias

    def stock_config(self, base: nn.Module):
        """The config a merged model is saved with: the base model's own, or, when a merge had to turn on bias
        flags that the family's stock class lacks, the same weights described as `merged_model_type` (its
        `native_bias_flags` groups completed with zero biases, since that class gives the whole group biases)."""
        config = base.config
        if self.merged_model_type is None or not any(getattr(config, switch.flag, False)
                                                      for switch in self.bias_switches.values()):
            return config
        from transformers import AutoConfig

        for switch in {s.flag: s for s in self.bias_switches.values()}.values():
            if switch.flag in self.native_bias_flags:
                for layer in self.layer_modules(base):
                    self.merge_bias(layer, switch.modules[-1], config)
        values = {key: value for key, value in config.to_dict().items() if key not in ("model_type", "architectures")}
        if values.get("sliding_window") and values.get("use_sliding_window", True):
            raise ModelError(f"This {config.model_type} model uses sliding-window attention, which the stock "
                             f"{self.merged_model_type} class a merged SLaSh model is written as does not have.")
        return AutoConfig.for_model(self.merged_model_type, **values)


def features(module: nn.Module) -> tuple[int, int]:
    """(inputs, outputs) of a projection: an nn.Linear, or GPT-2's Conv1D (its weight is [inputs, outputs])."""
    if hasattr(module, "in_features"):
        return module.in_features, module.out_features
    rows, columns = module.weight.shape
    return rows, columns


def _post_norm_sites(attention_out: str, up: str, down: str, output_norm: str) -> dict[str, ShiftSite]:
    """Post-LayerNorm encoders: the attention block's output is after its LayerNorm, so that shift enters the MLP's
    input and its residual (it folds into the up-projection through its weight, and into the down-projection)."""
    return {"attention": ShiftSite(attention_out, "output", ((up, True), (down, False))),
            "intermediate": ShiftSite(up, "output", ((up, False),)),
            "output": ShiftSite(output_norm, "input", ((down, False),))}


def _pre_norm_sites(attention_out: str, up: str, down: str) -> dict[str, ShiftSite]:
    """Pre-LayerNorm decoders: each shift is added to a projection's output before its residual add, and folds into
    that projection's own bias."""
    return {position: ShiftSite(path, "output", ((path, False),))
            for position, path in (("attention", attention_out), ("intermediate", up), ("output", down))}


_BERT_SITES = _post_norm_sites("attention.output", "intermediate.dense", "output.dense", "output.LayerNorm")
# every family's stock token classifier: `classifier` on each token's hidden state (a tagger reads no pooler, and
# the stock token classifiers have none)
_TOKENS = LinearClassifier(consumes=("pooler.",))
_ROBERTA = Family("encoder.layer", _BERT_SITES, ("query", "value"), {"classify": DenseTanhClassifier(), "tag": _TOKENS},
                  positions_after_padding=True)
_LLAMA_BIASES = {
    **dict.fromkeys(("self_attn.o_proj",), BiasSwitch("attention_bias", tuple(
        f"self_attn.{name}" for name in ("q_proj", "k_proj", "v_proj", "o_proj")))),
    **dict.fromkeys(("mlp.up_proj", "mlp.down_proj"), BiasSwitch("mlp_bias", tuple(
        f"mlp.{name}" for name in ("gate_proj", "up_proj", "down_proj")))),
}
# SmolLM2-135M, sentiment, 150 steps of 16 (../shared/reference/method.md): SLaSh at the down projection reached 81.5%
# at lr 1e-2, 79.0% at 3e-2 and 73.0% at 1e-1 (measured when the encoders' default was 3e-2; it is 1e-2 for SLaSh
# now too), so decoders keep 1e-2 for both projected methods.
_DECODER_LRS = {"slash": 1e-2, "jr-warp": 1e-2}
_LLAMA_LIKE = dict(layers="layers", shift_sites=_pre_norm_sites("self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"),
                   lora_targets=("q_proj", "v_proj"),
                   stock_heads={"classify": ScoreHead(), "tag": LinearClassifier("score"),
                                "generate": LanguageModelHead()}, norm="pre", causal=True,
                   bias_switches=_LLAMA_BIASES, method_lrs=_DECODER_LRS, gguf_architecture="llama")
FAMILIES: dict[str, Family] = {  # keyed by the config's model_type
    "bert": Family("encoder.layer", _BERT_SITES, ("query", "value"),
                   {"classify": LinearClassifier(), "tag": _TOKENS}),
    "roberta": _ROBERTA,
    "xlm-roberta": _ROBERTA,
    "camembert": _ROBERTA,
    "distilbert": Family(
        "transformer.layer", _post_norm_sites("sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm"),
        ("q_lin", "v_lin"), {"classify": ReluClassifier("output_layer_norm"), "tag": _TOKENS},
        sizes=ConfigSizes(layers="n_layers", hidden="dim", intermediate="hidden_dim", heads="n_heads"),
    ),
    "gpt2": Family(
        "h", _pre_norm_sites("attn.c_proj", "mlp.c_fc", "mlp.c_proj"), ("c_attn",),
        {"classify": ScoreHead(), "tag": _TOKENS, "generate": LanguageModelHead()},
        norm="pre", causal=True, sizes=ConfigSizes(layers="n_layer", hidden="n_embd", intermediate="n_inner",
                                                   intermediate_per_hidden=4, heads="n_head"),
        method_lrs=_DECODER_LRS,
    ),
    "llama": Family(**_LLAMA_LIKE),
    # Llama's layout with biases on the query / key / value projections only (none on the output projection or the
    # MLP, and no flag to add them): a merge that needs more is written as the same weights in a stock Llama.
    "qwen2": Family(**_LLAMA_LIKE, merged_model_type="llama", native_bias_flags=("attention_bias",)),
    "mistral": Family(**_LLAMA_LIKE, merged_model_type="llama"),
}


def family_of(model_type: str, model_name: str) -> Family:
    """The family of a config's model_type; an unsupported one is a clear error, never a fallback."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise ModelError(f"{model_name} is a {model_type!r} model; supported families: "
                         f"{', '.join(sorted(FAMILIES))}.") from None
