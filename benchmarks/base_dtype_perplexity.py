"""Issue 29: does a bf16 frozen base change what a run learns? SLaSh on the bundled SmolLM2, the generate task on
Alpaca (`../shared/data/instruct/alpaca_en_demo.json`, 10 % held out, seeded, as benchmarks/defaults_sweep.py
splits it), the same steps, seed and settings with `--base-dtype bf16` and `--base-dtype fp32` (both under the
run's bf16 autocast); the held-out answers' perplexity is scored by `jrft eval`, which replays each run's base.

    python benchmarks/base_dtype_perplexity.py --steps 60 --out docs/benchmarks/base_dtype.json

One `jrft` process at a time, under the shared lock of the other benchmarks."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from defaults_sweep import DECODER, alpaca_split, jrft


def trained_perplexity(base_dtype: str, train: Path, held: Path, steps: int, folder: Path) -> dict:
    run = folder / f"run-{base_dtype}"
    started = time.perf_counter()
    jrft(None, "train", f"--model={DECODER}", f"--data={train}", "--max-length=256", "--batch-size=8",
         "--method=slash", f"--max-steps={steps}", f"--eval-every={steps}", "--seed=0", f"--base-dtype={base_dtype}",
         f"--output={run}")
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    scored = json.loads(jrft(None, "eval", str(run), f"--data={held}", capture=True).stdout)
    return {"base_dtype": metrics["base_dtype"], "precision": metrics["precision"], "steps": metrics["train_steps"],
            "position": metrics["position"], "lr": metrics["lr"], "held_out_perplexity": scored["perplexity"],
            "held_out_loss": scored.get("loss"), "step_time_s": metrics["step_time_s"],
            "peak_memory_mb": metrics.get("peak_memory_mb"), "wall_s": round(time.perf_counter() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="base-dtype-") as scratch:
        folder = Path(scratch)
        train, held = alpaca_split(folder)
        rows = [trained_perplexity(base, train, held, args.steps, folder) for base in ("bf16", "fp32")]
    bf16, fp32 = rows
    change = bf16["held_out_perplexity"] / fp32["held_out_perplexity"] - 1
    report = {"rows": rows, "perplexity_bf16_over_fp32_minus_1": change}
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
