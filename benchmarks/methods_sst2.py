"""Every method side by side on SST-2 with the default model: same data, steps and batch, one process each
(so peak memory is the method's own), scored on the GLUE SST-2 dev set (`sst2/test.tsv`).

    python benchmarks/methods_sst2.py --steps 400 --train-rows 12000 --out benchmarks/results/methods_sst2
    python benchmarks/methods_sst2.py --model bundled:SmolLM2-135M-Instruct --batch-size 16 \
        --only slash-output slash-intermediate slash-attention lora head full --out benchmarks/results/decoder_sst2

Prints a Markdown table with step-time and memory ratios to full finetuning, and writes results.json."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from jrft_desktop.core import methods
from jrft_desktop.core.methods.options import option_flag

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def runs() -> list[tuple[str, list[str]]]:
    """(label, `jrft train` flags) of every registered method: its bench cases (SLaSh at each position), each at the
    method's default size (d = 1024 as in the paper, LoRA rank 8, ...); a case that comes out the same as an earlier
    one (LoRA at its budget and at rank 8) runs once."""
    found: dict[tuple[str, ...], str] = {}
    for method in methods.all_methods():
        for label, spec in method.bench_cases(budget=0):  # the budget is replaced by the default size
            flags = ["--method", method.name]
            for option in dataclasses.fields(method.options):
                value = getattr(spec, option.name)
                if option.name == method.size_name and value is None:
                    value = method.default_size
                if value != option.default:
                    flags += [option_flag(option)] + ([] if value is True else [str(value)])
            found.setdefault(tuple(flags), label)
    return [(label, list(flags)) for flags, label in found.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--train-rows", type=int, default=12000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--pooling", default="auto")
    parser.add_argument("--model", default="bundled:all-MiniLM-L6-v2")
    parser.add_argument("--seed", type=int, default=0, help="The runs' seed (data sample, initialisation, order).")
    parser.add_argument("--only", nargs="*", help="Run just these labels.")
    parser.add_argument("--out", default="benchmarks/results/methods_sst2")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for label, flags in runs():
        if args.only and label not in args.only:
            continue
        run_dir = out / label
        if not (run_dir / "metrics.json").is_file():
            command = [sys.executable, "-m", "jrft_desktop.cli", "train", "--data", str(DATA / "train.tsv"),
                       "--validation", str(DATA / "test.tsv"), "--max-train-rows", str(args.train_rows),
                       "--max-steps", str(args.steps), "--eval-every", str(args.steps),
                       "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                       "--pooling", args.pooling, "--seed", str(args.seed), "--model", args.model,
                       "--output", str(run_dir), *flags]
            print(" ".join(command), file=sys.stderr, flush=True)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        results[label] = json.loads((run_dir / "metrics.json").read_text())
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    full = results.get("full")
    print("| method | params (with head) | SST-2 dev acc | step s | step ÷ full | peak MB | memory ÷ full |")
    print("|---|---|---|---|---|---|---|")
    for label, m in results.items():
        ratio = f"{m['step_time_s'] / full['step_time_s']:.2f}" if full else "-"
        memory = f"{m['peak_memory_mb'] / full['peak_memory_mb']:.2f}" if full else "-"
        print(f"| {label} | {m['trainable_params_without_head']:,} ({m['trainable_params']:,}) | "
              f"{100 * m['accuracy']:.1f} | {m['step_time_s']:.3f} | {ratio} | {m['peak_memory_mb']:.0f} | {memory} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
