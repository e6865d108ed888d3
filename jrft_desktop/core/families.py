"""Everything that differs between architecture families, in one place.

A `Family` names where things live inside one layer (the modules methods hook into), how the layer is normalised,
which attention projections LoRA / VeRA target (PEFT's per-family target maps), how sizes are read from the
config, which biases a merge folds into, and how each task's trained head maps onto the family's stock class.
Encoders (BERT, RoBERTa, DistilBERT, DeBERTa-v2) are post-LayerNorm, ModernBERT pre-LayerNorm; decoders (GPT-2,
Llama, Qwen2/3, Mistral, Gemma 1-3, Phi-3, OLMo 2, SmolLM3, Granite) pre-LayerNorm and causal. The rest of the core
asks the family of a model; it never compares family names.

Adding a family is its entry in `FAMILIES` (and a stock head where a new shape needs one) plus passing the
conformance matrix, tests/core/test_family_matrix.py, which builds a tiny random model of every entry."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
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


class IdentityPoolerClassifier(StockHead):
    """DeBERTa-v2: `classifier(act(pooler.dense(first token)))`. The head read the first token itself, so the pooler's
    dense layer becomes the identity and its activation linear (`Family.stock_settings`), exactly."""

    def write(self, stock, base, head, last_layer, family):
        dense = stock.pooler.dense
        dense.weight.copy_(torch.eye(dense.weight.shape[0], dtype=dense.weight.dtype))
        dense.bias.zero_()
        stock.classifier.weight.copy_(head.weight)
        stock.classifier.bias.copy_(head.bias)


class NormalisedClassifier(StockHead):
    """ModernBERT: `classifier(norm(act(dense(x))))` on the first token (a sequence classifier) or on every token (a
    tagger), x being the model's last states, which its final LayerNorm made: x = g * n + b with n of mean 0 and
    variance 1. The dense layer undoes g and b (n = (x - b) / g), the activation is linear (`stock_settings`) and the
    head's LayerNorm, given g and b again, gives back x: LayerNorm(n) = n up to its epsilon, a relative 1e-5 at most
    (the stock head has no exact identity)."""

    def __init__(self, final_norm: str):
        self.final_norm = final_norm  # the base model's last LayerNorm

    def write(self, stock, base, head, last_layer, family):
        from .errors import ArtifactError

        norm, target = base.get_submodule(self.final_norm), stock.head
        gain = norm.weight.detach()
        if gain.abs().min() < 1e-6:
            raise ArtifactError("The model's final LayerNorm has a zero weight, so its stock classifier head cannot "
                                "reproduce the run; export it as ONNX.")
        shift = norm.bias.detach() if norm.bias is not None else torch.zeros_like(gain)
        target.dense.weight.copy_(torch.diag(1.0 / gain))
        if target.dense.bias is not None:
            target.dense.bias.copy_(-shift / gain)
        target.norm.weight.copy_(gain)
        if target.norm.bias is not None:
            target.norm.bias.copy_(shift)
        stock.classifier.weight.copy_(head.weight)
        stock.classifier.bias.copy_(head.bias if head.bias is not None else torch.zeros_like(stock.classifier.bias))


@dataclass(frozen=True)
class ShiftSite:
    """Where one SLaSh position adds its constant shift inside a layer, and which biases it folds into.

    `adds_to` is "output" (the module's output) or "input" (its first input); each fold is (module, through): the
    shift goes into that module's bias as it is, or first through its weight (when it enters the module's input)."""

    module: str
    adds_to: str
    folds: tuple[tuple[str, bool], ...]
    # a fused projection whose output is [first half, second half] (Phi-3's gate_up_proj, ModernBERT's Wi): the half
    # the shift goes to, the one that is not activated (as Llama's up_proj); None: the whole output
    half: int | None = None

    def spread(self, shift: torch.Tensor, width: int) -> torch.Tensor:
        """The shift over `width` features: itself, or in its half of a fused projection's output (zeros in the
        other half), as it is added and as it folds into that projection's bias."""
        if self.half is None:
            return shift
        size = shift.shape[-1]
        return nn.functional.pad(shift, (self.half * size, width - (self.half + 1) * size))


@dataclass(frozen=True)
class BiasSwitch:
    """A stock config flag that gives a group of a layer's projections biases (Llama's `attention_bias`,
    `mlp_bias`): a merge that needs one of them turns the flag on and gives the whole group zero biases."""

    flag: str
    modules: tuple[str, ...]  # relative to a layer


_ALL_BIASES = frozenset({"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"})


@dataclass(frozen=True)
class GgufLayout:
    """How llama.cpp holds a merged language model of the family (its converter's conventions, convert_hf_to_gguf.py,
    and its graph, src/models/): the architecture's name, whether the query / key rows are permuted (llama.cpp's
    "normal" RoPE turns adjacent pairs, Llama's transformers code the two halves), what its norm weights add (Gemma's
    norms compute with 1 + w, llama.cpp's with w), which projections' biases its graph adds (a merge that changed
    another bias cannot be this architecture), the activations it computes, whether it has sliding-window attention,
    and the architecture's own metadata (`fields(config)`, keys without the architecture's prefix)."""

    architecture: str
    pair_rotation: bool = False
    norm_offset: float = 0.0
    biases: frozenset[str] = frozenset()
    activations: tuple[str, ...] = ("silu",)
    sliding_window: bool = False
    fields: Callable[[object], dict] = lambda config: {}
    problem: Callable[[object], str] = lambda config: ""  # what of a config the architecture cannot run ('' if none)


def _gemma_gguf_fields(config) -> dict:
    """Gemma 2 and 3: the sliding window, which layers use it, each kind of layer's RoPE base, the soft caps."""
    rope = getattr(config, "rope_parameters", None) or {}
    full = rope.get("full_attention", rope)
    local = rope.get("sliding_attention", full)
    fields = {"rope.freq_base": float(full.get("rope_theta", 1_000_000.0)),
              "rope.freq_base_swa": float(local.get("rope_theta", 10_000.0))}
    if getattr(config, "sliding_window", None):
        fields["attention.sliding_window"] = int(config.sliding_window)
        fields["attention.sliding_window_pattern"] = [kind == "sliding_attention" for kind in config.layer_types]
    if full.get("rope_type", "default") == "linear":
        fields.update({"rope.scaling.type": "linear", "rope.scaling.factor": float(full["factor"])})
    for cap in ("attn_logit_softcapping", "final_logit_softcapping"):
        if getattr(config, cap, None):
            fields[cap] = float(getattr(config, cap))
    return fields


def _granite_gguf_fields(config) -> dict:
    """Granite's four multipliers, under llama.cpp's names."""
    return {"attention.scale": float(config.attention_multiplier),
            "embedding_scale": float(config.embedding_multiplier),
            "residual_scale": float(config.residual_multiplier), "logit_scale": float(config.logits_scaling)}


def _smollm3_gguf_problem(config) -> str:
    """llama.cpp's smollm3 leaves RoPE out of every fourth layer, as SmolLM3's checkpoints do."""
    every_fourth = [int((layer + 1) % 4 != 0) for layer in range(config.num_hidden_layers)]
    if list(getattr(config, "no_rope_layers", every_fourth)) != every_fourth:
        return "layers without RoPE other than every fourth (llama.cpp's smollm3 assumes every fourth)"
    return ""


_LLAMA_GGUF = GgufLayout("llama", pair_rotation=True, biases=_ALL_BIASES)
_GELU = ("gelu_pytorch_tanh",)  # Gemma's MLP activation (llama.cpp's GELU is the tanh approximation)


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
    method_lr_source: str = "measured on this family"  # the measurement behind method_lrs (the app's tooltip)
    # how llama.cpp holds its merged language model (None: no GGUF form is written for the family yet)
    gguf: GgufLayout | None = None
    # SLaSh's position for this family when the user leaves it at "auto" (None: the method's), and why; an "auto"
    # position that does not fold into the family's stock class gives way to one that does (`fold_problem`)
    default_position: str | None = None
    position_source: str = ""
    # config values every merged stock model is written with, so that its stock head computes what the run's head
    # did (DeBERTa's pooler activation made linear); the base model itself never reads them
    stock_settings: dict[str, object] = field(default_factory=dict)

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
            raise ModelError(self.stock_problem(task)) from None

    def stock_problem(self, task: str) -> str:
        """Why a merged run of `task` cannot be this family's stock transformers class ('' when it can): transformers
        has no such class for the family (Gemma 3 has no token classifier, Granite no classifiers)."""
        if task in self.stock_heads:
            return ""
        return (f"transformers has no stock {task} class for this family (it has one for "
                f"{', '.join(sorted(self.stock_heads))}); export the run as ONNX, or keep its vector file.")

    def fold_problem(self, layer: nn.Module, position: str, config) -> str:
        """Why a SLaSh shift at `position` cannot fold into a stock transformers class of this family ('' when it
        can): a projection it folds into has no bias and the stock class no setting that adds one, or the stock
        type the merge must be written as lacks a feature the model uses."""
        site = self.shift_sites[position]
        bare = [path for path, _ in site.folds
                if getattr(layer.get_submodule(path), "bias", None) is None and path not in self.bias_switches]
        if bare:
            return (f"its {' and '.join(dict.fromkeys(bare))} projections have no bias and no setting of the stock "
                    f"{config.model_type} class adds one")
        needs_switch = any(getattr(layer.get_submodule(path), "bias", None) is None for path, _ in site.folds)
        if needs_switch and self.merged_model_type and _sliding_window(config):
            return (f"the {self.merged_model_type} class it would be written as (to hold the biases) has no "
                    "sliding-window attention, which this model uses")
        return ""

    def merge_bias(self, layer: nn.Module, path: str, config) -> torch.Tensor:
        """The bias of `layer`'s module `path` that a merge folds a constant shift into. A module without one gets
        it through its family's stock config flag (set on `config`, the whole group given zero biases); without
        such a flag it gets a bias of its own, which the model in memory computes with (ONNX traces it) but no stock
        class holds: the stock forms refuse such a merge first (`fold_problem`)."""
        module = layer.get_submodule(path)
        if getattr(module, "bias", None) is not None:
            return module.bias
        switch = self.bias_switches.get(path)
        for name in switch.modules if switch is not None else (path,):
            target = layer.get_submodule(name)
            if target.bias is None:
                target.bias = nn.Parameter(target.weight.new_zeros(target.weight.shape[0]), requires_grad=False)
        if switch is not None:
            setattr(config, switch.flag, True)
        return module.bias

    def stock_config(self, base: nn.Module):
        """The config a merged model is saved with: the base model's own, or, when a merge had to turn on bias
        flags that the family's stock class lacks, the same weights described as `merged_model_type` (its
        `native_bias_flags` groups completed with zero biases, since that class gives the whole group biases)."""
        config = base.config
        for key, value in self.stock_settings.items():
            setattr(config, key, value)
        if self.merged_model_type is None or not any(getattr(config, switch.flag, False)
                                                      for switch in self.bias_switches.values()):
            return config
        from transformers import AutoConfig

        for switch in {s.flag: s for s in self.bias_switches.values()}.values():
            if switch.flag in self.native_bias_flags:
                for layer in self.layer_modules(base):
                    self.merge_bias(layer, switch.modules[-1], config)
        values = {key: value for key, value in config.to_dict().items() if key not in ("model_type", "architectures")}
        if _sliding_window(config):
            raise ModelError(f"This {config.model_type} model uses sliding-window attention, which the stock "
                             f"{self.merged_model_type} class a merged SLaSh model is written as does not have.")
        return AutoConfig.for_model(self.merged_model_type, **values)


def _sliding_window(config) -> bool:
    """Whether a config's attention is limited to a sliding window (Mistral's, Qwen2's when switched on)."""
    return bool(getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True))


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


def _pre_norm_sites(attention_out: str, up: str, down: str, up_half: int | None = None) -> dict[str, ShiftSite]:
    """Pre-LayerNorm models: each shift is added to a projection's output before its residual add (Gemma 2/3 and
    OLMo 2: before the norm of that output), and folds into that projection's own bias; `up_half`: the up
    projection is fused with the gate, and the shift goes to this half of its output."""
    return {position: ShiftSite(path, "output", ((path, False),), half)
            for position, path, half in (("attention", attention_out, None), ("intermediate", up, up_half),
                                         ("output", down, None))}


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
_DECODER_LR_SOURCE = ("decoders, SmolLM2-135M classifying SST-2 (150 steps of 16): 81.5% at 1e-2, 79.0% at 3e-2, "
                      "73.0% at 1e-1; on 300 held-out SST-2 training rows after 80 steps of 16 "
                      "(benchmarks/families_sst2.py): output 78.3% at 1e-2 and 73.3% at 3e-2, intermediate 76.0% and "
                      "attention 67.7% at 1e-2")
# Gemma 3 270M, the same held-out SST-2 rows and steps, at the attention position (the only one that folds)
_GEMMA_LR_SOURCE = ("Gemma 3 270M classifying 300 held-out SST-2 training rows after 80 steps of 16 at the attention "
                    "position (benchmarks/families_sst2.py): 83.3% at 1e-2, 82.3% at 3e-3 and at 3e-2")
_LLAMA_LIKE = dict(layers="layers", shift_sites=_pre_norm_sites("self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"),
                   lora_targets=("q_proj", "v_proj"),
                   stock_heads={"classify": ScoreHead(), "tag": LinearClassifier("score"),
                                "generate": LanguageModelHead()}, norm="pre", causal=True,
                   bias_switches=_LLAMA_BIASES, method_lrs=_DECODER_LRS, method_lr_source=_DECODER_LR_SOURCE,
                   gguf=_LLAMA_GGUF)
# Families whose stock class can give the attention projections biases but not the MLP (no `mlp_bias`): SLaSh's
# default is the attention position, the only one that folds.
_ATTENTION_ONLY = {**_LLAMA_LIKE, "bias_switches": {"self_attn.o_proj": _LLAMA_BIASES["self_attn.o_proj"]},
                   "gguf": None, "default_position": "attention",
                   "position_source": "the only position that folds into the stock class (its MLP has no biases)"}
_NO_TAGGER = {"classify": ScoreHead(), "generate": LanguageModelHead()}  # transformers has no token classifier
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
        method_lrs=_DECODER_LRS, method_lr_source=_DECODER_LR_SOURCE,
    ),
    "llama": Family(**_LLAMA_LIKE),
    # Llama's layout with biases on the query / key / value projections only (none on the output projection or the
    # MLP, and no flag to add them): a merge that needs more is written as the same weights in a stock Llama.
    "qwen2": Family(**_LLAMA_LIKE, merged_model_type="llama", native_bias_flags=("attention_bias",)),
    "mistral": Family(**_LLAMA_LIKE, merged_model_type="llama"),
    # Llama's layout with query / key norms. Its stock class can add biases to the attention projections
    # (`attention_bias`), never to the MLP, so only the attention shift folds.
    "qwen3": Family(**{**_ATTENTION_ONLY,  # llama.cpp's qwen3 adds query / key / value biases, no output bias
                       "gguf": GgufLayout("qwen3", biases=frozenset({"attn_q", "attn_k", "attn_v"}))}),
    # both flags; llama.cpp's smollm3 adds no bias (LoRA, VeRA and full merges write GGUF files)
    "smollm3": Family(**{**_LLAMA_LIKE, "gguf": GgufLayout("smollm3", pair_rotation=True,
                                                            problem=_smollm3_gguf_problem)}),
    # post-norms around each block's output (the shift is before them); llama.cpp's olmo2 adds no bias
    "olmo2": Family(**{**_ATTENTION_ONLY, "stock_heads": _NO_TAGGER, "gguf": GgufLayout("olmo2")}),
    # Gemma: (1 + w) norms, the embeddings scaled; its MLP has no bias flag; llama.cpp's gemma adds no bias
    "gemma": Family(**{**_ATTENTION_ONLY, "gguf": GgufLayout("gemma", norm_offset=1.0, activations=_GELU)}),
    # ... and post-norms around each block's output, sliding-window layers, soft-capped logits
    "gemma2": Family(**{**_ATTENTION_ONLY, "gguf": GgufLayout("gemma2", norm_offset=1.0, activations=_GELU,
                                                               sliding_window=True, fields=_gemma_gguf_fields)}),
    "gemma3_text": Family(**{**_ATTENTION_ONLY, "stock_heads": _NO_TAGGER,  # ... and query / key norms
                             "method_lr_source": _GEMMA_LR_SOURCE,
                             "gguf": GgufLayout("gemma3", norm_offset=1.0, activations=_GELU,
                                                sliding_window=True, fields=_gemma_gguf_fields)}),
    # both flags; transformers has no Granite classifier, so only generation merges into a stock class
    "granite": Family(**{**_LLAMA_LIKE, "stock_heads": {"generate": LanguageModelHead()},
                         "gguf": GgufLayout("granite", pair_rotation=True, biases=_ALL_BIASES,
                                            fields=_granite_gguf_fields)}),
    # fused query-key-value and gate-up projections, and no bias anywhere nor a flag to add one: no shift folds
    # into a stock class (LoRA, VeRA, the head and full finetuning merge exactly; a SLaSh run exports as ONNX)
    "phi3": Family(**{**_LLAMA_LIKE, "shift_sites": _pre_norm_sites("self_attn.o_proj", "mlp.gate_up_proj",
                                                                    "mlp.down_proj", up_half=1),
                      "lora_targets": ("qkv_proj",), "bias_switches": {}, "gguf": None}),
    # DeBERTa-v3 checkpoints: BERT's post-LayerNorm layer (disentangled attention inside it changes no path)
    "deberta-v2": Family("encoder.layer", _BERT_SITES, ("query_proj", "value_proj"),
                         {"classify": IdentityPoolerClassifier(), "tag": _TOKENS},
                         stock_settings={"pooler_hidden_act": "linear", "pooler_dropout": 0.0}),
    # pre-LayerNorm encoder with fused query-key-value (`Wqkv`) and input-gate (`Wi`) projections and, by default,
    # no biases: the stock flags add them, so every shift folds
    "modernbert": Family(
        "layers", _pre_norm_sites("attn.Wo", "mlp.Wi", "mlp.Wo", up_half=1), ("Wqkv",),
        {"classify": NormalisedClassifier("final_norm"), "tag": NormalisedClassifier("final_norm")}, norm="pre",
        bias_switches={**dict.fromkeys(("attn.Wo",), BiasSwitch("attention_bias", ("attn.Wqkv", "attn.Wo"))),
                       **dict.fromkeys(("mlp.Wi", "mlp.Wo"), BiasSwitch("mlp_bias", ("mlp.Wi", "mlp.Wo")))},
        stock_settings={"classifier_activation": "linear", "classifier_pooling": "cls", "classifier_bias": True,
                        "classifier_dropout": 0.0}),
}


def family_of(model_type: str, model_name: str) -> Family:
    """The family of a config's model_type; an unsupported one is a clear error naming the closest supported one,
    never a fallback."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        close = difflib.get_close_matches(str(model_type), FAMILIES, n=1, cutoff=0.5)
        hint = f" The closest supported family is {close[0]!r}; it is a different architecture, so the model cannot " \
               "be loaded as one." if close else ""
        raise ModelError(f"{model_name} is a {model_type!r} model; supported families: "
                         f"{', '.join(sorted(FAMILIES))}.{hint}") from None
