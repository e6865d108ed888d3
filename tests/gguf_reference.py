"""A GGUF file of llama.cpp's `llama` architecture run in numpy the way llama.cpp runs it, written from its graph
(src/models/llama.cpp) and not from transformers: RMSNorm, the "normal" RoPE that rotates adjacent pairs of a head
(which is why the converter permutes the query and key rows), grouped-query causal attention, the SiLU-gated MLP,
every optional bias added where present, and `output` falling back to `token_embd`. Only `gguf.GGUFReader` reads
the file, so a wrong permutation, name or bias shows up as wrong logits."""

from __future__ import annotations

import numpy as np


def read(path) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata {key: value}, tensors {name: float64 array in numpy order}) of a GGUF file."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    tensors = {tensor.name: np.asarray(tensor.data, dtype=np.float64) for tensor in reader.tensors}
    return fields, tensors


def _rms(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight


def _rope(x: np.ndarray, base: float) -> np.ndarray:
    """[tokens, heads, head_dim]: pair (2i, 2i+1) of each head turned by position * base^(-2i / head_dim)."""
    tokens, _, dim = x.shape
    angles = np.arange(tokens)[:, None] * base ** (-np.arange(0, dim, 2) / dim)[None, :]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = even * cos - odd * sin, even * sin + odd * cos
    return out


def _linear(tensors: dict, name: str, x: np.ndarray) -> np.ndarray:
    out = x @ tensors[f"{name}.weight"].T
    return out + tensors[f"{name}.bias"] if f"{name}.bias" in tensors else out


def logits(fields: dict, tensors: dict, ids: list[int]) -> np.ndarray:
    """[tokens, vocab] logits of `ids` (one sequence from position 0)."""
    arch = fields["general.architecture"]
    heads, kv = fields[f"{arch}.attention.head_count"], fields[f"{arch}.attention.head_count_kv"]
    eps, base = fields[f"{arch}.attention.layer_norm_rms_epsilon"], fields[f"{arch}.rope.freq_base"]
    x = tensors["token_embd.weight"][ids]
    tokens = len(ids)
    causal = np.triu(np.full((tokens, tokens), -np.inf), 1)
    for block in range(fields[f"{arch}.block_count"]):
        prefix = f"blk.{block}"
        h = _rms(x, tensors[f"{prefix}.attn_norm.weight"], eps)
        q = _linear(tensors, f"{prefix}.attn_q", h).reshape(tokens, heads, -1)
        k = _linear(tensors, f"{prefix}.attn_k", h).reshape(tokens, kv, -1)
        v = _linear(tensors, f"{prefix}.attn_v", h).reshape(tokens, kv, -1)
        q, k = _rope(q, base), _rope(k, base)
        k, v = np.repeat(k, heads // kv, axis=1), np.repeat(v, heads // kv, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(q.shape[-1]) + causal
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        attended = np.einsum("hqk,khd->qhd", weights, v).reshape(tokens, -1)
        x = x + _linear(tensors, f"{prefix}.attn_output", attended)
        h = _rms(x, tensors[f"{prefix}.ffn_norm.weight"], eps)
        gate = _linear(tensors, f"{prefix}.ffn_gate", h)
        x = x + _linear(tensors, f"{prefix}.ffn_down", gate / (1 + np.exp(-gate)) * _linear(tensors, f"{prefix}.ffn_up", h))
    x = _rms(x, tensors["output_norm.weight"], eps)
    return x @ tensors.get("output.weight", tensors["token_embd.weight"]).T


def greedy(fields: dict, tensors: dict, ids: list[int], new_tokens: int) -> list[int]:
    """The next `new_tokens` ids chosen greedily (full passes, no cache)."""
    ids, out = list(ids), []
    for _ in range(new_tokens):
        out.append(int(logits(fields, tensors, ids)[-1].argmax()))
        ids.append(out[-1])
    return out
