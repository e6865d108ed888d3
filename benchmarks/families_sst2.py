"""Issue 28: the two real decoders (the bundled SmolLM2-135M-Instruct and Gemma 3 270M) on SST-2.

`sweep`: SLaSh's default position and learning rate per family, chosen on a held-out part of the TRAINING data
(`sst2/validation.tsv`, a split of GLUE train; the GLUE dev set, `test.tsv`, is not read by the sweep): SmolLM2
at each position (all three fold into its stock Llama class), Gemma 3 at its attention position (the only one
that folds into its stock class) at three learning rates.

`report`: SLaSh at the chosen default, LoRA, the linear head and full finetuning on each decoder, trained on
12,000 rows of `sst2/train.tsv`, batch 16, inputs up to 64 tokens, evaluated on 300 held-out rows every 25 steps
until the validation accuracy stops improving (early stopping after 2 evaluations without a gain, at most
--max-steps; the sweep's runs every 20 steps), then scored once on `sst2/test.tsv` (872 sentences) with `jrft eval`: test accuracy, trainable
parameters, median step time and the process's peak memory.

Every case is one `jrft train` process, one at a time under `flock /tmp/jrft-heavy.lock` (the machine is shared),
and appends a line to RESULTS (resumable: a case already there is skipped, unless `report` asks for more steps
than one that had not converged took; its new line then replaces it):

    python benchmarks/families_sst2.py sweep
    python benchmarks/families_sst2.py report
    python benchmarks/families_sst2.py table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sst2"
RESULTS = ROOT / "docs" / "benchmarks" / "families" / "results.jsonl"
LOCK = os.environ.get("JRFT_BENCH_LOCK", "/tmp/jrft-heavy.lock")  # one heavy job at a time on a shared machine
MODELS = {"smollm2": "bundled:SmolLM2-135M-Instruct", "gemma3": "bundled:gemma-3-270m"}
COMMON = [f"--data={DATA}/train.tsv", "--max-train-rows=12000", f"--validation={DATA}/validation.tsv",
          "--max-length=64", "--batch-size=16", "--seed=0"]
# how often a run is evaluated, on how many held-out rows (the sweep's runs are shorter: the machine is shared)
EVALUATION = {"sweep": ["--eval-every=20", "--max-validation-rows=300"],
              "report": ["--eval-every=25", "--max-validation-rows=300"]}
SWEEP = {"smollm2": [("attention", 1e-2), ("intermediate", 1e-2), ("output", 1e-2), ("best", 3e-2)],
         "gemma3": [("attention", 3e-3), ("attention", 1e-2), ("attention", 3e-2)]}
REPORT_METHODS = ("slash", "lora", "head", "full")


def _done() -> dict[str, dict]:
    if not RESULTS.is_file():
        return {}
    return {row["case"]: row for row in map(json.loads, RESULTS.read_text(encoding="utf-8").splitlines())}


def _run(case: str, flags: list[str], test: bool) -> dict:
    """One `jrft train` (and `jrft eval` on the test file) under the machine's lock; its summary."""
    out = Path(tempfile.mkdtemp(prefix=f"families-{case}-"))
    evaluation = EVALUATION["report" if test else "sweep"]
    command = ["flock", LOCK, sys.executable, "-m", "jrft_desktop.cli", "train", *COMMON, *evaluation, *flags,
               f"--output={out}"]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    row = {"case": case, "flags": flags, "run": str(out), **{key: metrics.get(key) for key in (
        "accuracy", "best_step", "train_steps", "stop_reason", "trainable_params", "step_time_s", "peak_memory_mb",
        "position", "lr", "precision", "base_dtype", "wall_time_s")}}
    if test:
        done = subprocess.run(["flock", LOCK, sys.executable, "-m", "jrft_desktop.cli", "eval", str(out),
                               f"--data={DATA}/test.tsv"], check=True, capture_output=True, text=True)
        row["test"] = json.loads(done.stdout)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as file:
        file.write(json.dumps(row) + "\n")
    return row


def sweep(max_steps: int) -> None:
    done = _done()
    for name, grid in SWEEP.items():
        for position, lr in grid:
            if position == "best":  # the best position so far, at the next learning rate
                rows = [row for case, row in done.items() if case.startswith(f"sweep-{name}-")]
                position = max(rows, key=lambda row: row["accuracy"])["position"]
            case = f"sweep-{name}-{position}-{lr:g}"
            if case not in done:
                done[case] = _run(case, [f"--model={MODELS[name]}", "--method=slash", f"--position={position}",
                                         f"--lr={lr}", f"--max-steps={max_steps}", "--early-stopping=2"], test=False)


def _capped(row: dict, max_steps: int) -> bool:
    """A run stopped by a lower step cap than `max_steps` before it converged: run again under the higher cap."""
    return not row["stop_reason"].startswith("converged") and row["train_steps"] < max_steps


def report(max_steps: int) -> None:
    done = _done()
    for method in REPORT_METHODS:  # every model's cheaper methods first: full finetuning takes longest
        for name, model in MODELS.items():
            case = f"report-{name}-{method}"
            if case not in done or _capped(done[case], max_steps):  # each method at the family's default lr
                done[case] = _run(case, [f"--model={model}", f"--method={method}", f"--max-steps={max_steps}",
                                         "--early-stopping=2"], test=True)


def table() -> None:
    print("| case | position | lr | best step / steps | val acc | test acc | trainable | step s | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case, row in _done().items():
        test = row.get("test", {}).get("accuracy")
        print(f"| {case} | {row['position'] or '-'} | {row['lr']:g} | {row['best_step']} / {row['train_steps']} | "
              f"{row['accuracy']:.3f} | {'' if test is None else f'{test:.3f}'} | {row['trainable_params']:,} | "
              f"{row['step_time_s']:.2f} | {row['peak_memory_mb']:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("sweep", "report", "table"))
    parser.add_argument("--max-steps", type=int, default=300)
    args = parser.parse_args()
    {"sweep": lambda: sweep(args.max_steps), "report": lambda: report(args.max_steps), "table": table}[args.what]()


if __name__ == "__main__":
    main()
