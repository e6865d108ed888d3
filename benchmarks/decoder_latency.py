"""The bundled decoder's load times and a merged SLaSh model's inference latency against the base model's.

    python benchmarks/decoder_latency.py --vector RUN_DIR/vector.safetensors [--rounds 5]

1. Load: the first load of `bundled:SmolLM2-135M-Instruct` in a fresh cache (the GGUF file dequantised into a
   safetensors folder) and the later loads (from that folder), each in a fresh process.
2. Latency: the run's merged stock `LlamaForSequenceClassification` (SLaSh folded into biases that its config
   switches on) and the base model as the same stock class, on the same batches of SST-2 dev sentences, measured
   round-robin (round 0 warms up); prints the median seconds per batch and their ratio."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "test.tsv"
LOAD = """
import json, time
started = time.perf_counter()
from jrft_desktop.core.config import BUNDLED_DECODER, ModelSpec
from jrft_desktop.core.models import load_backbone
loaded = load_backbone(ModelSpec(BUNDLED_DECODER))
print(json.dumps({"seconds": time.perf_counter() - started, "parameters": loaded.info.parameters}))
"""


def load_seconds(cache: str) -> dict:
    done = subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True, check=True,
                          env={**os.environ, "JRFT_CACHE": cache})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vector", required=True, help="A slash run's vector.safetensors on the bundled decoder.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache:
        first = load_seconds(cache)
        later = [load_seconds(cache)["seconds"] for _ in range(2)]
    print(f"load: first {first['seconds']:.1f} s (dequantising the GGUF file), later {min(later):.1f} s; "
          f"{first['parameters']:,} parameters")

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from jrft_desktop.core.export.merged import export_merged
    from jrft_desktop.core.export.vector import restore
    from jrft_desktop.core.models import bundled_decoder_folder

    restored = restore(Path(args.vector))
    merged_dir = Path(tempfile.mkdtemp()) / "merged"
    export_merged(restored.model, restored.method, restored.tokenizer, restored.metadata, merged_dir)
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir).eval()
    base = AutoModelForSequenceClassification.from_pretrained(bundled_decoder_folder(), num_labels=2).eval()
    base.config.pad_token_id = merged.config.pad_token_id
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    lines = DATA.read_text(encoding="utf-8").splitlines()[1:1 + args.batch_size * args.batches]
    texts = [line.split("\t")[0] for line in lines]
    batches = [tokenizer(texts[start:start + args.batch_size], padding=True, truncation=True, max_length=64,
                         return_tensors="pt") for start in range(0, len(texts), args.batch_size)]
    times = {"base": [], "merged": []}
    with torch.no_grad():
        for round_index in range(args.rounds + 1):
            for name, model in (("base", base), ("merged", merged)):
                for batch in batches:
                    tick = time.perf_counter()
                    model(**batch)
                    if round_index:
                        times[name].append(time.perf_counter() - tick)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"latency (batch {args.batch_size}, {torch.get_num_threads()} threads): base {medians['base']:.3f} s, "
          f"merged {medians['merged']:.3f} s, merged / base {medians['merged'] / medians['base']:.3f} "
          f"({type(merged).__name__}, mlp_bias={merged.config.mlp_bias}, "
          f"attention_bias={merged.config.attention_bias})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
