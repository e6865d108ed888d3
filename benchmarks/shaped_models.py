"""Random-weight decoders shaped like Qwen2.5-0.5B and Qwen2.5-1.5B (their configs' sizes, vocabulary 151,936, tied
embeddings), with the bundled SmolLM2's tokenizer and chat template (ids below its 49,152 tokens; the output layer
still spans the whole vocabulary, which is what memory and time depend on). Saved in bf16, as those checkpoints
ship. Nothing is downloaded.

    python benchmarks/shaped_models.py            # both, into ~/.cache/jrft-desktop/shaped/
    python benchmarks/shaped_models.py --shapes qwen2.5-0.5b"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from jrft_desktop.core.paths import cache_dir

SHAPES = {
    "qwen2.5-0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2},
    "qwen2.5-1.5b": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                     "num_attention_heads": 12, "num_key_value_heads": 2},
}
VOCABULARY = 151_936


def folder_of(shape: str) -> Path:
    return cache_dir() / "shaped" / shape


def build(shape: str, seed: int = 0) -> Path:
    """The model's folder, made the first time."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from jrft_desktop.core.models import bundled_decoder_folder

    folder = folder_of(shape)
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_decoder_folder()))
    config = Qwen2Config(vocab_size=VOCABULARY, max_position_embeddings=32768, tie_word_embeddings=True,
                         rope_theta=1_000_000.0, rms_norm_eps=1e-6, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **SHAPES[shape])
    with torch.device("cpu"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    for shape in parser.parse_args().shapes:
        print(build(shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
