"""A merged language model as a GGUF file for llama.cpp and Ollama: a folder with `model.gguf`, a one-line Ollama
`Modelfile` (`FROM ./model.gguf`) and `jrft_manifest.json`.

The file is the merged stock `AutoModelForCausalLM` (the one the transformers form writes) in llama.cpp's `llama`
architecture: tensors `token_embd`, `blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
ffn_up, ffn_down}`, `output_norm` and `output` (left out when tied to the embeddings), f32, or f16 for the
matrices (`gguf-f16`; norms and biases stay f32). The query and key rows are permuted as llama.cpp's
`convert_hf_to_gguf.py` does, because llama.cpp rotates adjacent pairs of a head (its "normal" RoPE) where
transformers rotates the two halves. Biases that a SLaSh merge folded in are written as `blk.N.attn_output.bias`,
`blk.N.ffn_up.bias`, `blk.N.ffn_down.bias` (and the zero biases of their groups): llama.cpp's llama architecture
loads these optional tensors and adds them (`src/models/llama.cpp`, `TENSOR_NOT_REQUIRED`), as Ollama's own llama
engine does (`nn.Linear` adds a bias when one is present). transformers' GGUF loader does not: it builds a Llama
config without `attention_bias` / `mlp_bias`, so it drops them (a merge without folded biases, LoRA or full, loads
there exactly). Metadata: `general.*`, the `llama.*` sizes, and `tokenizer.ggml.*` (model `gpt2`, byte-level BPE
tokens, types, merges, special ids) with `tokenizer.chat_template`.

Before the folder is written the file is read back with `gguf.GGUFReader`: every tensor, its permutation undone,
must equal the merged weight bit for bit (f16: the weight rounded to f16), and every metadata value must read
back as written; otherwise nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import ArtifactError
from .merged import check_target, merged_stock, write_records
from ..models import JrftModel
from ..paths import atomic_directory, atomic_write_text

FORM = "gguf"
MODEL_FILE = "model.gguf"
DTYPES = ("f32", "f16")
# the tokenizers pre-tokenizer of a byte-level BPE, as JSON, and the llama.cpp pre-tokenizer that splits alike
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_PRE_TOKENIZERS = (
    ("gpt2", [_BYTE_LEVEL]),
    ("smollm", [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]),  # one digit at a time, then GPT-2's
)


def check(model: JrftModel, method) -> None:
    """An ArtifactError saying why this run cannot be a GGUF file for llama.cpp, if it cannot."""
    method.check_foldable()
    if model.task.trains_head:
        raise ArtifactError(f"A GGUF file holds a language model for llama.cpp / Ollama; this {model.task.name} run "
                            "trained a new head on the decoder, which llama.cpp cannot run. Export it as a "
                            "transformers folder or ONNX.")
    if model.family.gguf_architecture is None:
        raise ArtifactError(f"GGUF is written for Llama-form decoders (Llama, Qwen2, Mistral: llama.cpp's llama "
                            f"architecture); {model.info.model_id} is a {model.info.family} model. Export it as a "
                            "transformers folder or ONNX.")
    _check_config(model.base().config)


def _rope(config) -> tuple[str, float]:
    """(rope type, rope theta) of a config (transformers 5's `rope_parameters`, or the older attributes)."""
    parameters = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = parameters.get("rope_type", parameters.get("type", "default"))
    return kind, float(parameters.get("rope_theta", getattr(config, "rope_theta", None) or 10000.0))


def _check_config(config) -> None:
    kind, _theta = _rope(config)
    problems = []
    if kind != "default":
        problems.append(f"RoPE scaling {kind!r} (this export writes plain RoPE only)")
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        problems.append("sliding-window attention (llama.cpp's llama architecture attends to every token)")
    if getattr(config, "hidden_act", "silu") not in ("silu", "swish"):
        problems.append(f"the activation {config.hidden_act!r} (llama.cpp's llama MLP is SiLU-gated)")
    if problems:
        raise ArtifactError(f"This model cannot be written as a GGUF file for llama.cpp: it uses {'; '.join(problems)}."
                            " Export it as a transformers folder.")


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a query / key projection (or its bias) in llama.cpp's order: within each head, the two halves that
    transformers rotates together become adjacent pairs (convert_hf_to_gguf.py's LlamaModel.permute)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def _unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of `_permute` (what transformers' GGUF reader applies)."""
    return weight.reshape(heads, weight.shape[0] // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def _heads(config) -> dict:
    heads = config.num_attention_heads
    return {"q": heads, "k": getattr(config, "num_key_value_heads", None) or heads}


def _tensors(stock: torch.nn.Module, architecture: str, dtype: str) -> dict[str, tuple[str, np.ndarray]]:
    """{GGUF name: (the stock model's weight name, the array written)} in the stock model's order; a weight that has
    no place in llama.cpp's architecture is a clear error."""
    import gguf

    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[architecture]
    config = stock.config
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = stock.get_output_embeddings().weight is stock.get_input_embeddings().weight
    permuted = {gguf.MODEL_TENSOR.ATTN_Q: _heads(config)["q"], gguf.MODEL_TENSOR.ATTN_K: _heads(config)["k"]}
    out = {}
    for hf_name, tensor in stock.state_dict().items():
        found = names.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise ArtifactError(f"The merged weight {hf_name} has no place in llama.cpp's {architecture} "
                                "architecture, so this model cannot be written as GGUF.")
        kind, name = found
        if tied and kind == gguf.MODEL_TENSOR.OUTPUT:
            continue  # llama.cpp reads a missing `output` as the token embeddings
        array = tensor.detach().to(torch.float32).cpu().numpy()
        if kind in permuted:
            array = _permute(array, permuted[kind])
        out[name] = (hf_name, array.astype(np.float16) if dtype == "f16" and array.ndim > 1 else array)
    return out


def _pre_tokenizer(spec: dict | None) -> str | None:
    """llama.cpp's name for a tokenizers pre-tokenizer (JSON), or None when it has none that splits the same."""
    steps = (spec or {}).get("pretokenizers", [spec]) if (spec or {}).get("type") == "Sequence" else [spec]
    for name, wanted in _PRE_TOKENIZERS:
        if len(steps) == len(wanted) and all(step and all(step.get(key) == value for key, value in part.items())
                                             for step, part in zip(steps, wanted)):
            return name
    return None


def _vocabulary(tokenizer, vocab_size: int) -> dict:
    """The `tokenizer.ggml.*` fields of a byte-level BPE tokenizer (GPT-2's kind, SmolLM2's); any other kind is a
    clear error."""
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model, pre = spec.get("model") or {}, _pre_tokenizer(spec.get("pre_tokenizer"))
    if model.get("type") != "BPE" or pre is None or spec.get("normalizer") is not None:
        raise ArtifactError("This export writes byte-level BPE tokenizers (GPT-2's kind, as SmolLM2 has) for "
                            "llama.cpp; this model's tokenizer is another kind, so it cannot be written as GGUF. "
                            "Export it as a transformers folder.")
    ids = {**model["vocab"], **{token["content"]: token["id"] for token in spec.get("added_tokens", [])}}
    if max(ids.values()) >= vocab_size:
        raise ArtifactError(f"The tokenizer has ids past the model's {vocab_size} embeddings; it cannot be written as "
                            "GGUF.")
    kinds = {token["id"]: gguf.TokenType.CONTROL if token.get("special") else gguf.TokenType.USER_DEFINED
             for token in spec.get("added_tokens", [])}
    tokens = [f"[PAD{index}]" for index in range(vocab_size)]
    types = [int(gguf.TokenType.UNUSED)] * vocab_size
    for token, index in ids.items():
        tokens[index], types[index] = token, int(kinds.get(index, gguf.TokenType.NORMAL))
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model.get("merges", [])]
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    fields = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
              "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges,
              "tokenizer.ggml.add_bos_token": bool(tokenizer.bos_token_id is not None and probe[:1] == [
                  tokenizer.bos_token_id]),
              "tokenizer.ggml.add_eos_token": bool(tokenizer.eos_token_id is not None and probe[-1:] == [
                  tokenizer.eos_token_id])}
    for key, value in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                       ("unknown", tokenizer.unk_token_id), ("padding", tokenizer.pad_token_id)):
        if value is not None:
            fields[f"tokenizer.ggml.{key}_token_id"] = int(value)
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        fields["tokenizer.chat_template"] = tokenizer.chat_template
    return fields


def _fields(config, architecture: str, tokenizer, metadata: dict, dtype: str) -> dict:
    """Every metadata key of the file with its value (ints are written as uint32, floats as float32)."""
    import gguf

    heads = _heads(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads["q"]
    base = str(metadata["base_model"]["id"]).removeprefix("bundled:").rstrip("/").rsplit("/", 1)[-1]
    fields = {
        "general.architecture": architecture, "general.type": "model",
        "general.name": f"{base} {metadata['method']}",
        "general.description": f"{metadata['method']} merged into {metadata['base_model']['id']} by JRFT Desktop",
        "general.file_type": int(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32),
        f"{architecture}.vocab_size": int(config.vocab_size),
        f"{architecture}.context_length": int(config.max_position_embeddings),
        f"{architecture}.embedding_length": int(config.hidden_size),
        f"{architecture}.block_count": int(config.num_hidden_layers),
        f"{architecture}.feed_forward_length": int(config.intermediate_size),
        f"{architecture}.attention.head_count": int(heads["q"]),
        f"{architecture}.attention.head_count_kv": int(heads["k"]),
        f"{architecture}.attention.layer_norm_rms_epsilon": float(config.rms_norm_eps),
        f"{architecture}.attention.key_length": int(head_dim),
        f"{architecture}.attention.value_length": int(head_dim),
        f"{architecture}.rope.dimension_count": int(head_dim),
        f"{architecture}.rope.freq_base": _rope(config)[1],
    }
    return {**fields, **_vocabulary(tokenizer, int(config.vocab_size))}


def _write(path: Path, architecture: str, fields: dict, tensors: dict) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    for key, value in fields.items():
        if key == "general.architecture":
            continue  # the writer adds it
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)
    for name, (_hf_name, array) in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def verify(path: Path, fields: dict, written: dict[str, str], state: dict[str, torch.Tensor], heads: dict,
           dtype: str) -> None:
    """Read the file back: the metadata as written, and every tensor ({GGUF name: stock weight name} in `written`),
    its permutation undone, equal to the merged weight in `state` (f16: rounded to f16), none missing or extra;
    an ArtifactError otherwise."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    for key, wanted in fields.items():
        got = reader.fields[key].contents() if key in reader.fields else None
        if isinstance(wanted, float):
            wanted = float(np.float32(wanted))
        if got != wanted:
            raise ArtifactError(f"The GGUF file's {key} read back as {str(got)[:60]!r}, not as written; it was not "
                                "saved.")
    if sorted(tensor.name for tensor in reader.tensors) != sorted(written):
        raise ArtifactError("The GGUF file's tensors are not the merged model's; it was not saved.")
    permuted = {gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ATTN_Q]: heads["q"],
                gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ATTN_K]: heads["k"]}  # "blk.{bid}.attn_q", ...
    for tensor in reader.tensors:
        array, hf_name = np.asarray(tensor.data), written[tensor.name]
        block = tensor.name.split(".")[1] if tensor.name.startswith("blk.") else ""
        for pattern, count in permuted.items():
            if tensor.name.rsplit(".", 1)[0] == pattern.format(bid=block):
                array = _unpermute(array, count)
        wanted = state[hf_name].detach().to(torch.float32).numpy()
        if dtype == "f16" and wanted.ndim > 1:
            wanted = wanted.astype(np.float16)
        if array.shape != wanted.shape or array.dtype != wanted.dtype or not np.array_equal(array, wanted):
            raise ArtifactError(f"The GGUF tensor {tensor.name} does not read back as the merged weight {hf_name}; "
                                "the file was not saved.")
        if not np.isfinite(array).all():
            raise ArtifactError(f"{hf_name} does not fit in f16 (it overflows); export it as f32 (--format gguf).")


def export_gguf(model: JrftModel, method, tokenizer, metadata: dict, out_dir: Path, dtype: str = "f32") -> Path:
    """Write the folder atomically (the trained model is left as it was; the merge works on a copy)."""
    check(model, method)
    out_dir = check_target(out_dir)
    stock = merged_stock(model, method, metadata)
    _check_config(stock.config)
    architecture = model.family.gguf_architecture
    tensors = _tensors(stock, architecture, dtype)
    fields = _fields(stock.config, architecture, tokenizer, metadata, dtype)
    with atomic_directory(out_dir) as temp:
        _write(temp / MODEL_FILE, architecture, fields, tensors)
        verify(temp / MODEL_FILE, fields, {name: hf_name for name, (hf_name, _) in tensors.items()},
               stock.state_dict(), _heads(stock.config), dtype)
        atomic_write_text(temp / "Modelfile", f"FROM ./{MODEL_FILE}\n")
        write_records(temp, model, metadata, FORM if dtype == "f32" else f"{FORM}-{dtype}")
    return out_dir


def export_gguf_f16(model: JrftModel, method, tokenizer, metadata: dict, out_dir: Path) -> Path:
    return export_gguf(model, method, tokenizer, metadata, out_dir, dtype="f16")
