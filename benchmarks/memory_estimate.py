"""The memory estimate against the measured peak RSS (issue 29): each case trains a few steps with `jrft train` in a
fresh process (a process's peak RSS never goes down), which records its estimate and its peak in metrics.json.

    python benchmarks/memory_estimate.py                       # every case
    python benchmarks/memory_estimate.py --cases smollm2-32x128 qwen0.5b-8x256

Cases: the bundled encoder on RTE's sentence pairs (batch 32 x 128: most batches hold a pair of 128 tokens), the bundled SmolLM2 on Alpaca (32 x 128, the defaults, and
8 x 256), and the Qwen2.5-shaped random-weight decoders (benchmarks/shaped_models.py) on Alpaca at 8 x 256."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ALPACA = DATA / "instruct" / "alpaca_en_demo.json"


def cases() -> dict[str, list[str]]:
    from shaped_models import folder_of

    generate = ["--data", str(ALPACA), "--task", "generate"]
    return {
        "encoder-32x128": ["--data", str(DATA / "rte" / "train.tsv"), "--batch-size", "32", "--max-length", "128"],
        "smollm2-32x128": [*generate, "--model", "bundled:SmolLM2-135M-Instruct", "--batch-size", "32",
                           "--max-length", "128"],
        "smollm2-8x256": [*generate, "--model", "bundled:SmolLM2-135M-Instruct", "--batch-size", "8",
                          "--max-length", "256"],
        "qwen0.5b-8x256": [*generate, "--model", str(folder_of("qwen2.5-0.5b")), "--batch-size", "8",
                           "--max-length", "256"],
        "qwen1.5b-8x256": [*generate, "--model", str(folder_of("qwen2.5-1.5b")), "--batch-size", "8",
                           "--max-length", "256"],
    }


def run_case(name: str, arguments: list[str], extra: list[str], steps: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        command = [sys.executable, "-m", "jrft_desktop.cli", "train", *arguments, "--max-steps", str(steps),
                   "--eval-every", str(steps), "--max-validation-rows", "16", "--method", "slash", "--output", str(run),
                   *extra]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            return {"case": name, "error": done.stderr.strip().splitlines()[-1:] or done.returncode}
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    estimate, peak = metrics["estimated_memory_mb"], metrics["peak_memory_mb"]
    return {"case": name, "extra": " ".join(extra), "estimate_mb": round(estimate), "peak_mb": round(peak),
            "error_pct": round(100 * (estimate - peak) / peak, 1), "step_s": metrics["step_time_s"],
            "base_dtype": metrics.get("base_dtype"), "precision": metrics.get("precision")}


def main() -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    known = cases()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=list(known), default=list(known))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="More `jrft train` options, e.g. "
                        "--base-dtype fp32 or --gradient-checkpointing.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = []
    for name in args.cases:
        results.append(run_case(name, known[name], args.extra, args.steps))
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
