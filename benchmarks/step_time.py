"""Training step time of every method, measured round-robin in one process on the same batches.

Interleaving the methods (a few steps of each, repeated) spreads this shared machine's load changes over all
of them alike, so the ratios to full finetuning are trustworthy even when absolute times drift.

    python benchmarks/step_time.py --rounds 8 --steps-per-round 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from jrft_desktop.core import methods
from jrft_desktop.core.config import MethodSpec, ModelSpec
from jrft_desktop.core.data import load_examples
from jrft_desktop.core.models import Encoder, load_backbone
from jrft_desktop.core.paths import sample_data_dir

CASES = [
    ("slash-output", MethodSpec(name="slash", d=1024, position="output")),
    ("slash-intermediate", MethodSpec(name="slash", d=1024, position="intermediate")),
    ("slash-attention", MethodSpec(name="slash", d=1024, position="attention")),
    ("slash-output-on-the-fly", MethodSpec(name="slash", d=1024, position="output", on_the_fly=True)),
    ("jr-warp", MethodSpec(name="jr-warp", d=1024)),
    ("head", MethodSpec(name="head")),
    ("bitfit", MethodSpec(name="bitfit")),
    ("lora", MethodSpec(name="lora", rank=8)),
    ("warp", MethodSpec(name="warp", prompt_tokens=8)),
    ("full", MethodSpec(name="full")),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()

    examples = load_examples(str(sample_data_dir() / "sst2_train.tsv"), "sentence", None, "label", ("0", "1"))
    runs = {}
    for label, spec in CASES:
        loaded = load_backbone(ModelSpec())
        model, _, plan = methods.build(loaded, "auto", 2, spec)
        encoder = Encoder(loaded.tokenizer, args.max_length, model)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        runs[label] = (model, encoder, optimizer, plan, [])
    batches = []
    for start in range(0, args.steps_per_round * args.batch_size, args.batch_size):
        stop = start + args.batch_size
        batches.append((examples.texts[start:stop], torch.tensor(examples.labels[start:stop])))

    for round_index in range(args.rounds + 1):  # round 0 warms up every method and is not counted
        for label, (model, encoder, optimizer, _, times) in runs.items():
            model.train(False)
            for texts, labels in batches:
                inputs = encoder.collate(encoder.encode(texts)[0])
                tick = time.perf_counter()
                loss = torch.nn.functional.cross_entropy(model(**inputs), labels)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if round_index:
                    times.append(time.perf_counter() - tick)
        print(f"round {round_index}/{args.rounds} done", file=sys.stderr, flush=True)

    full = statistics.median(runs["full"][4])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, max length "
          f"{args.max_length}, {args.rounds} x {args.steps_per_round} timed steps per method")
    print("| method | trainable (with head) | median step s | step ÷ full |")
    print("|---|---|---|---|")
    for label, (_, _, _, plan, times) in runs.items():
        median = statistics.median(times)
        print(f"| {label} | {plan.method_params:,} ({plan.trainable_params:,}) | {median:.3f} | {median / full:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
