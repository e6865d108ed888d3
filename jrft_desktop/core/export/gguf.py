"""A merged language model as a GGUF file for llama.cpp and Ollama: a folder with `model.gguf`, an Ollama
`Modelfile` (the file, the prompt template and the stop tokens of the run's chat format) and `jrft_manifest.json`.

The file is the merged stock `AutoModelForCausalLM` (the one the transformers form writes) in the llama.cpp
architecture of its family (`Family.gguf`: `llama` for Llama, Mistral and Qwen2, `qwen3`, `gemma3`, `granite`),
written as llama.cpp's `convert_hf_to_gguf.py` writes it: tensor names from `gguf`'s map of the architecture, f32,
or f16 for the matrices (`gguf-f16`; norms and biases stay f32); the query and key rows permuted where llama.cpp
rotates adjacent pairs of a head (Llama, Granite) while transformers rotates the two halves; Gemma's norm weights
plus one (llama.cpp multiplies by w, transformers by 1 + w). Biases a merge changed are written where llama.cpp's
graph of the architecture adds them (Llama's and Granite's every projection, `TENSOR_NOT_REQUIRED`; Qwen3's query,
key and value); a changed bias it would not read is refused before anything is written (a SLaSh shift at Gemma 3's
or Qwen3's attention output: their graphs have no output bias), and zero biases it does not read are left out.

Metadata: `general.*`, the architecture's sizes and own keys (Gemma 3's sliding window and its layers, Granite's
multipliers), and the tokenizer as llama.cpp expects it for the base model: the fields of the GGUF file the base
was converted from when there is one (the bundled decoders: `bundled.TOKENIZER_FIELDS`), else a byte-level BPE
(`tokenizer.ggml.model` gpt2) with llama.cpp's name of its pre-tokenizer (`gpt-2`, `smollm`, `qwen2`, `llama-bpe`),
tokens, types, merges, special ids and `tokenizer.chat_template`.

Before the folder is written the file is read back with `gguf.GGUFReader`: every tensor, its permutation and norm
offset undone, must equal the merged weight bit for bit (f16: the weight rounded to f16), and every metadata value
must read back as written; otherwise nothing is written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from .. import bundled
from ..errors import ArtifactError
from ..families import FAMILIES, GgufLayout
from ..models import JrftModel
from ..paths import atomic_directory, atomic_write_text
from .merged import check_stock_weights, check_target, merged_stock, write_records

FORM = "gguf"
MODEL_FILE = "model.gguf"
DTYPES = ("f32", "f16")


def check(model: JrftModel, method) -> None:
    """An ArtifactError saying why this run cannot be a GGUF file for llama.cpp, if it cannot."""
    method.check_foldable()
    if model.task.trains_head:
        raise ArtifactError(f"A GGUF file holds a language model for llama.cpp / Ollama; this {model.task.name} run "
                            "trained a new head on the decoder, which llama.cpp cannot run. Export it as a "
                            "transformers folder or ONNX.")
    layout = model.family.gguf
    if layout is None:
        written = sorted(name for name, family in FAMILIES.items() if family.gguf is not None)
        raise ArtifactError(f"GGUF files are written for the {', '.join(written)} families (llama.cpp's "
                            f"{', '.join(sorted({FAMILIES[name].gguf.architecture for name in written}))} "
                            f"architectures); {model.info.model_id} is a {model.info.family} model. Export it as a "
                            "transformers folder or ONNX.")
    check_stock_weights(model, method)
    _check_config(model.base().config, layout)
    for path in method.folded_biases(model):
        kind = _kind(model, path)
        if kind not in layout.biases:
            raise ArtifactError(f"llama.cpp's {layout.architecture} graph adds no bias to {kind or path}, where this "
                                "run's shift folds; a GGUF file would drop it. Export it as a transformers folder or "
                                "ONNX (LoRA, VeRA and full finetuning of this model write GGUF files).")


def _kind(model: JrftModel, path: str) -> str | None:
    """The GGUF tensor kind ("attn_output", ...) of a layer's module `path` in the family's architecture."""
    import gguf

    layout = model.family.gguf
    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[layout.architecture]
    names = gguf.get_tensor_name_map(arch, len(model.layers()))
    prefix = model.base().base_model_prefix
    found = names.get_type_and_name(f"{prefix}.{model.family.layers}.0.{path}.bias", try_suffixes=(".bias",))
    return found[1].split(".")[2] if found else None


def _rope(config) -> tuple[str, float]:
    """(rope type, rope theta) of a config (transformers 5's `rope_parameters`, or the older attributes)."""
    parameters = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = parameters.get("rope_type", parameters.get("type", "default"))
    return kind, float(parameters.get("rope_theta", getattr(config, "rope_theta", None) or 10000.0))


def _activation(config) -> str:
    return getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", "silu")


def _check_config(config, layout: GgufLayout) -> None:
    kind, _theta = _rope(config)
    problems = []
    if kind != "default":
        problems.append(f"RoPE scaling {kind!r} (this export writes plain RoPE only)")
    if not layout.sliding_window and getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window",
                                                                                           True):
        problems.append(f"sliding-window attention (llama.cpp's {layout.architecture} attends to every token)")
    if layout.problem(config):
        problems.append(layout.problem(config))
    if _activation(config) not in layout.activations:
        problems.append(f"the activation {_activation(config)!r} (llama.cpp's {layout.architecture} MLP computes "
                        f"{' or '.join(layout.activations)})")
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


def _permuted(layout: GgufLayout, config) -> dict[str, int]:
    """{GGUF tensor kind: heads} of the rows permuted for llama.cpp's pair rotation (none without it)."""
    return {"attn_q": _heads(config)["q"], "attn_k": _heads(config)["k"]} if layout.pair_rotation else {}


def _offset(layout: GgufLayout, name: str) -> float:
    return layout.norm_offset if name.endswith("norm.weight") else 0.0


def _tensors(stock: torch.nn.Module, layout: GgufLayout, dtype: str) -> dict[str, tuple[str, np.ndarray]]:
    """{GGUF name: (the stock model's weight name, the array written)} in the stock model's order; a weight that has
    no place in llama.cpp's architecture, or a changed bias its graph would not add, is a clear error."""
    import gguf

    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[layout.architecture]
    config = stock.config
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = stock.get_output_embeddings().weight is stock.get_input_embeddings().weight
    output = f"{_output_name(stock)}.weight"
    permuted, out = _permuted(layout, config), {}
    for hf_name, tensor in stock.state_dict().items():
        if tied and hf_name == output:
            continue  # llama.cpp reads a missing `output` as the token embeddings
        found = names.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise ArtifactError(f"The merged weight {hf_name} has no place in llama.cpp's {layout.architecture} "
                                "architecture, so this model cannot be written as GGUF.")
        name, kind = found[1], found[1].split(".")[2] if found[1].startswith("blk.") else ""
        array = tensor.detach().to(torch.float32).cpu().numpy() + _offset(layout, name)
        if name.endswith(".bias") and kind not in layout.biases:
            if np.any(array):
                raise ArtifactError(f"llama.cpp's {layout.architecture} graph adds no {kind} bias, and this merge "
                                    f"changed {hf_name}; export it as a transformers folder or ONNX.")
            continue  # a zero bias (of a group a stock flag switched on) computes nothing: left out
        if kind in permuted:
            array = _permute(array, permuted[kind])
        out[name] = (hf_name, array.astype(np.float16) if dtype == "f16" and array.ndim > 1 else array)
    return out


def _output_name(stock: torch.nn.Module) -> str:
    return next(name for name, module in stock.named_modules() if module is stock.get_output_embeddings())


def _byte_level_vocabulary(tokenizer, vocab_size: int) -> dict:
    """The `tokenizer.ggml.*` fields of a byte-level BPE tokenizer (GPT-2's kind, SmolLM2's, Qwen's); any other kind
    is a clear error."""
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model, pre = spec.get("model") or {}, bundled.pre_tokenizer_name(spec.get("pre_tokenizer"))
    # Qwen's tokenizers normalise to NFC first, which llama.cpp leaves out (text that is already NFC, as typed text
    # almost always is, splits the same)
    if model.get("type") != "BPE" or pre is None or (spec.get("normalizer") or {"type": "NFC"})["type"] != "NFC":
        raise ArtifactError("This export writes byte-level BPE tokenizers (GPT-2's kind, as SmolLM2 and Qwen have) for "
                            "llama.cpp, or the tokenizer of the GGUF file a model came from; this model's tokenizer "
                            "is another kind, so it cannot be written as GGUF. Export it as a transformers folder "
                            "(llama.cpp's convert_hf_to_gguf.py converts such a folder).")
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
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges, **_special_fields(tokenizer)}


def _special_fields(tokenizer) -> dict:
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    fields = {"tokenizer.ggml.add_bos_token": bool(tokenizer.bos_token_id is not None
                                                   and probe[:1] == [tokenizer.bos_token_id]),
              "tokenizer.ggml.add_eos_token": bool(tokenizer.eos_token_id is not None
                                                   and probe[-1:] == [tokenizer.eos_token_id])}
    for key, value in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                       ("unknown", tokenizer.unk_token_id), ("padding", tokenizer.pad_token_id)):
        if value is not None:
            fields[f"tokenizer.ggml.{key}_token_id"] = int(value)
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        fields["tokenizer.chat_template"] = tokenizer.chat_template
    return fields


def _vocabulary(tokenizer, vocab_size: int, base_folder: str) -> dict:
    """The tokenizer fields llama.cpp expects for the base model: those of the GGUF file it was converted from (as
    they were), else a byte-level BPE's."""
    kept = bundled.read_tokenizer_fields(base_folder) if Path(base_folder).is_dir() else None
    if kept is None:
        return _byte_level_vocabulary(tokenizer, vocab_size)
    fields = {key: field["value"] for key, field in kept.items()}
    if len(fields.get("tokenizer.ggml.tokens", [])) != vocab_size:
        raise ArtifactError(f"The tokenizer of the GGUF file this model came from has "
                            f"{len(fields.get('tokenizer.ggml.tokens', []))} tokens, not the model's {vocab_size}.")
    return fields


def _fields(config, layout: GgufLayout, tokenizer, metadata: dict, dtype: str, base_folder: str) -> dict:
    """Every metadata key of the file with its value (ints are written as uint32, floats as float32, lists of ints as
    int32 arrays)."""
    import gguf

    arch, heads = layout.architecture, _heads(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads["q"]
    base = str(metadata["base_model"]["id"]).removeprefix("bundled:").rstrip("/").rsplit("/", 1)[-1]
    sizes = {"context_length": config.max_position_embeddings, "embedding_length": config.hidden_size,
             "block_count": config.num_hidden_layers, "feed_forward_length": config.intermediate_size,
             "attention.head_count": heads["q"], "attention.head_count_kv": heads["k"],
             "attention.key_length": head_dim, "attention.value_length": head_dim,
             "rope.dimension_count": head_dim, "vocab_size": config.vocab_size}
    fields = {
        "general.architecture": arch, "general.type": "model", "general.name": f"{base} {metadata['method']}",
        "general.description": f"{metadata['method']} merged into {metadata['base_model']['id']} by JRFT Desktop",
        "general.file_type": int(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32),
        **{f"{arch}.{key}": int(value) for key, value in sizes.items()},
        f"{arch}.attention.layer_norm_rms_epsilon": float(config.rms_norm_eps),
        f"{arch}.rope.freq_base": _rope(config)[1],
        **{f"{arch}.{key}": value for key, value in layout.fields(config).items()},
    }
    return {**fields, **_vocabulary(tokenizer, int(config.vocab_size), base_folder)}


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


def verify(path: Path, fields: dict, written: dict[str, str], state: dict[str, torch.Tensor], layout: GgufLayout,
           config, dtype: str) -> None:
    """Read the file back: the metadata as written, and every tensor ({GGUF name: stock weight name} in `written`),
    its permutation and norm offset undone, equal to the merged weight in `state` (f16: rounded to f16), none
    missing or extra; an ArtifactError otherwise."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    for key, wanted in fields.items():
        got = reader.fields[key].contents() if key in reader.fields else None
        if isinstance(wanted, float):
            wanted = float(np.float32(wanted))
        elif isinstance(wanted, list) and wanted and isinstance(wanted[0], float):
            wanted = [float(np.float32(value)) for value in wanted]
        if got != wanted:
            raise ArtifactError(f"The GGUF file's {key} read back as {str(got)[:60]!r}, not as written; it was not "
                                "saved.")
    if sorted(tensor.name for tensor in reader.tensors) != sorted(written):
        raise ArtifactError("The GGUF file's tensors are not the merged model's; it was not saved.")
    permuted = _permuted(layout, config)
    for tensor in reader.tensors:
        array, hf_name = np.asarray(tensor.data), written[tensor.name]
        kind = tensor.name.split(".")[2] if tensor.name.startswith("blk.") else ""
        if kind in permuted:
            array = _unpermute(array, permuted[kind])
        wanted = state[hf_name].detach().to(torch.float32).numpy() + _offset(layout, tensor.name)
        if dtype == "f16" and wanted.ndim > 1:
            wanted = wanted.astype(np.float16)
        if array.shape != wanted.shape or array.dtype != wanted.dtype or not np.array_equal(array, wanted):
            raise ArtifactError(f"The GGUF tensor {tensor.name} does not read back as the merged weight {hf_name}; "
                                "the file was not saved.")
        if not np.isfinite(array).all():
            raise ArtifactError(f"{hf_name} does not fit in f16 (it overflows); export it as f32 (--format gguf).")


def modelfile(tokenizer) -> str:
    """The Ollama Modelfile of the run's chat format: its prompt template in Ollama's Go template language (ChatML,
    Gemma's turns, Llama 3's headers, or the plain instruction format of a model without a chat template) and the
    tokens that end an answer; a template of another kind stays the one inside the file."""
    from ..tasks.generate import stop_token_ids

    template = getattr(tokenizer, "chat_template", None)
    templated = isinstance(template, str)
    eos = tokenizer.eos_token or ""
    go = next((go for marker, go in _GO_TEMPLATES.items() if templated and marker in template), None)
    if not templated:
        go = _PLAIN_GO.replace("{eos}", eos)
    lines = [f"FROM ./{MODEL_FILE}"]
    if go is not None:
        lines.append(f'TEMPLATE """{go}"""')
    else:
        lines.append("# the chat template is the file's tokenizer.chat_template (Ollama reads it from there)")
    system = _default_system(tokenizer) if templated else ""
    if system:  # the system turn the chat template writes when a conversation has none (SmolLM2's), as trained
        lines.append(f'SYSTEM """{system}"""')
    stops = [tokenizer.convert_ids_to_tokens(token) for token in sorted(stop_token_ids(tokenizer, templated))]
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops if stop]
    return "\n".join(lines) + "\n"


def _default_system(tokenizer) -> str:
    """The system message a ChatML template adds to a conversation that has none ('' when it adds none)."""
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Q"}], tokenize=False,
                                             add_generation_prompt=True)
    found = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", rendered, flags=re.DOTALL)
    return found.group(1) if found else ""


# Ollama templates (Go text/template) of the chat formats the app meets, keyed by a token their Jinja templates use
_GO_TEMPLATES = {
    "<|im_start|>": ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
                     "<|im_start|>assistant\n"),
    "<start_of_turn>": ("{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}"
                        "{{ .Role }}{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n"),
    "<|start_header_id|>": ("{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
                            "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"),
}
# the app's plain instruction format (tasks/generate.py), for a model without a chat template (Gemma 3 270M)
_PLAIN_GO = ("{{- range .Messages }}{{ if eq .Role \"system\" }}{{ .Content }}\n\n{{ else if eq .Role \"user\" }}"
             "### Instruction:\n{{ .Content }}\n\n### Response:\n{{ else }}{{ .Content }}{eos}\n\n{{ end }}{{ end }}")


def export_gguf(model: JrftModel, method, tokenizer, metadata: dict, out_dir: Path, dtype: str = "f32") -> Path:
    """Write the folder atomically (the trained model is left as it was; the merge works on a copy)."""
    check(model, method)
    out_dir = check_target(out_dir)
    stock = merged_stock(model, method, metadata)
    layout = model.family.gguf
    _check_config(stock.config, layout)
    tensors = _tensors(stock, layout, dtype)
    fields = _fields(stock.config, layout, tokenizer, metadata, dtype, model.info.path)
    with atomic_directory(out_dir) as temp:
        _write(temp / MODEL_FILE, layout.architecture, fields, tensors)
        verify(temp / MODEL_FILE, fields, {name: hf_name for name, (hf_name, _) in tensors.items()},
               stock.state_dict(), layout, stock.config, dtype)
        atomic_write_text(temp / "Modelfile", modelfile(tokenizer))
        write_records(temp, model, metadata, FORM if dtype == "f32" else f"{FORM}-{dtype}")
    return out_dir


def export_gguf_f16(model: JrftModel, method, tokenizer, metadata: dict, out_dir: Path) -> Path:
    return export_gguf(model, method, tokenizer, metadata, out_dir, dtype="f16")
