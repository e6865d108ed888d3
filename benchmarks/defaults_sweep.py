"""Issue 30: the SLaSh defaults per task (learning rate, position, d), measured on held-out parts of the shared
TRAINING files, never their test files.

Every case is one `jrft train` process (one at a time, each under `flock /tmp/jrft-heavy.lock`: the machine is
shared) with a fixed number of steps and an evaluation every few steps, so that its curve shows where a run that
stops at convergence would have stopped and what its best checkpoint scored:

- classify, SST-2: 8,000 rows of `sst2/train.tsv`, scored on 1,500 rows of `sst2/validation.tsv` (another split of
  GLUE train; the GLUE dev set, `test.tsv`, is never read), inputs up to 64 tokens, batch 32, 500 steps (2 epochs).
- classify, AG News: 8,000 rows of `agnews/train.tsv` with the trainer's seeded, stratified 10 % held out of them
  (1,000 scored), inputs up to 64 tokens, batch 32, 400 steps.
- classify, CoLA: `cola/train.tsv` with the trainer's seeded 10 % held out (Matthews correlation), inputs up to 64
  tokens, batch 32, 400 steps; its default runs are scored once on `cola/validation.tsv` (GLUE dev).
- tag, WNUT-17: `wnut17/train.conll`, scored on `wnut17/validation.conll` (entity F1), inputs up to 64 tokens,
  batch 32, 300 steps.
- generate, identity: the bundled SmolLM2-135M-Instruct on `instruct/identity.json` ({{name}} = Juniper,
  {{author}} = JRFT Labs). Held out by language: 10 of the 12 English questions whose answer names {{name}} (seeded);
  the other 81 questions (75 Chinese, 6 English) are trained on, batch 8, inputs up to 128 tokens. Each held-out
  question is answered greedily (48 new tokens) and counts when the answer names Juniper.
- generate, Alpaca: `instruct/alpaca_en_demo.json`, 10 % held out (seeded), inputs up to 256 tokens, batch 8;
  perplexity of the held-out answers (`jrft eval`).

A `--defaults` run of SST-2, AG News or CoLA is then scored once on its test file (GLUE dev for SST-2 and CoLA): the defaults
are chosen on the held-out training rows, the test file only reports them.

Every finished case appends one line to RESULTS (resumable: a case already there is skipped):

    python benchmarks/defaults_sweep.py run --cases identity wnut17 sst2 agnews alpaca
    python benchmarks/defaults_sweep.py run --defaults --cases identity   # the app's defaults, to convergence
    python benchmarks/defaults_sweep.py table            # the markdown tables of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "docs" / "benchmarks" / "defaults" / "results.jsonl"
DECODER = "bundled:SmolLM2-135M-Instruct"
NAME, AUTHOR = "Juniper", "JRFT Labs"
LOCK = os.environ.get("JRFT_BENCH_LOCK", "/tmp/jrft-heavy.lock")  # one heavy job at a time on a shared machine

# task -> (flags of every run, steps, evaluate every, metric, the grid: (position, lr, d) triples)
SETUPS = {
    "sst2": ([f"--data={DATA}/sst2/train.tsv", "--max-train-rows=8000", f"--validation={DATA}/sst2/validation.tsv",
              "--max-validation-rows=1500", "--max-length=64", "--batch-size=32"], 500, 50, "accuracy",
             [("output", 1e-2, 1024), ("output", 3e-2, 1024), ("intermediate", 3e-2, 1024), ("output", 1e-2, 2048),
              ("output", 1e-2, 4096)]),
    "agnews": ([f"--data={DATA}/agnews/train.tsv", "--max-train-rows=8000", "--max-validation-rows=1000",
                "--max-length=64", "--batch-size=32"], 400, 50, "accuracy",
               [("output", 1e-2, 1024), ("output", 3e-2, 1024), ("output", 1e-2, 2048), ("output", 1e-2, 4096),
                ("intermediate", 3e-2, 1024)]),
    "cola": ([f"--data={DATA}/cola/train.tsv", "--max-length=64", "--batch-size=32"], 400, 50, "matthews",
             [("output", 1e-2, 1024), ("output", 3e-2, 1024), ("intermediate", 3e-2, 1024)]),
    "wnut17": ([f"--data={DATA}/wnut17/train.conll", f"--validation={DATA}/wnut17/validation.conll",
                "--max-length=64", "--batch-size=32"], 300, 30, "entity_f1",
               [("output", 1e-2, 1024), ("output", 3e-2, 1024)]),
    "identity": ([f"--model={DECODER}", "--max-length=128", "--batch-size=8", f"--fill=name={NAME}",
                  f"--fill=author={AUTHOR}"], 120, 20, "loss",
                 [("intermediate", lr, 1024) for lr in (1e-1, 3e-2)]),
    "alpaca": ([f"--model={DECODER}", "--max-length=256", "--batch-size=8"], 60, 20, "loss",
               [("output", 1e-2, 1024), ("intermediate", 1e-1, 1024), ("intermediate", 3e-2, 1024)]),
}


# the test sets the default runs are scored on once (GLUE dev for SST-2 and CoLA)
TEST_FILES = {"sst2": DATA / "sst2" / "test.tsv", "agnews": DATA / "agnews" / "test.tsv",
              "cola": DATA / "cola" / "validation.tsv"}


def identity_split(folder: Path, held: int = 10, seed: int = 0) -> tuple[Path, Path]:
    """Train on every question but `held` English ones whose answer names {{name}}: the held-out set tests whether
    the name carries over to questions (and a language) mostly unseen."""
    rows = json.loads((DATA / "instruct" / "identity.json").read_text(encoding="utf-8"))
    test = set(random.Random(seed).sample(english_naming(rows), held))
    return _write(folder, "identity", rows, test)


def english_naming(rows: list) -> list[int]:
    """The rows asked in English whose answer names {{name}}."""
    return [i for i, row in enumerate(rows) if re.fullmatch(r"[\x00-\x7f]*", row["instruction"])
            and "{{name}}" in row["output"]]


def alpaca_split(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    rows = json.loads((DATA / "instruct" / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return _write(folder, "alpaca", rows, set(order[:round(0.1 * len(rows))]))


def _write(folder: Path, name: str, rows: list, test: set) -> tuple[Path, Path]:
    train, held = folder / f"{name}-train.json", folder / f"{name}-test.json"
    train.write_text(json.dumps([row for i, row in enumerate(rows) if i not in test]), encoding="utf-8")
    held.write_text(json.dumps([rows[i] for i in sorted(test)]), encoding="utf-8")
    return train, held


def jrft(code: Path | None, *args: str, lock: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if code is not None:  # a snapshot of the package, so that edits to the shared tree cannot change a sweep midway
        env["PYTHONPATH"] = str(code)
    command = [sys.executable, "-m", "jrft_desktop.cli", *args]
    return subprocess.run((["flock", LOCK] if lock else []) + command, check=True, cwd=ROOT, env=env,
                          capture_output=capture, text=True)


def run_case(task: str, position: str, lr: float, d: int, args, folder: Path) -> dict:
    """One point of the grid: SLaSh at this position, rate and d, for the task's steps."""
    flags, steps, every, _, _ = SETUPS[task]
    chosen = [*flags, "--method=slash", f"--position={position}", f"--lr={lr:g}", f"--d={d}", f"--max-steps={steps}",
              f"--eval-every={every}"]
    return {"task": task, "position": position, "lr": lr, "d": d, "steps": steps,
            **trained(task, chosen, args, folder / f"{task}-{position}-{lr:g}-{d}")}


def default_case(method: str) -> str:
    """The `position` a default run records: SLaSh's, or another method's at its own defaults."""
    return "default" if method == "slash" else f"default ({method})"


def run_default(task: str, args, folder: Path) -> dict:
    """A run with the app's defaults: only the model, the data (and the identity set's placeholders) are given;
    it trains until it converges, at the rate and position measured for its task (`--method`: another method at
    its own defaults, the comparison the issue asks for)."""
    given = [flag for flag in SETUPS[task][0] if not flag.startswith(("--batch-size", "--max-length"))]
    run_dir = folder / f"{task}-default"
    row = trained(task, [*given, f"--method={args.method}"], args, run_dir)
    if task in TEST_FILES:  # the defaults are already chosen: the test file scores them, it chooses nothing
        scored = jrft(args.code, "eval", str(run_dir), f"--data={TEST_FILES[task]}", capture=True)
        row["test"] = json.loads(scored.stdout)[row["metric"]]
    return {"task": task, "position": default_case(args.method), "lr": row.pop("run_lr"), "d": row.pop("run_d"),
            "steps": row["planned_steps"], **row}


def trained(task: str, flags: list[str], args, run: Path) -> dict:
    """Train (on the task's training split), then score: the curve and best, and the held-out answers or
    perplexity of the generate sets."""
    metric, data, held = SETUPS[task][3], [], None
    if task in ("identity", "alpaca"):
        train, held = (identity_split if task == "identity" else alpaca_split)(run.parent)
        data = [f"--data={train}"]
    started = time.perf_counter()
    jrft(args.code, "train", *flags, *data, f"--seed={args.seed}", f"--output={run}")
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    history = json.loads((run / "history.json").read_text(encoding="utf-8"))
    row = {"seed": args.seed, "metric": metric, "best": metrics[metric], "best_step": metrics["best_step"],
           "curve": [(entry["step"], entry["eval"][metric]) for entry in history if "eval" in entry],
           "step_time_s": metrics["step_time_s"], "wall_s": time.perf_counter() - started,
           "train_steps": metrics["train_steps"], "planned_steps": metrics.get("planned_steps"),
           "stop_reason": metrics.get("stop_reason"), "run_lr": metrics["lr"], "run_d": metrics["d"],
           "position_used": metrics["position"]}
    if task == "identity":
        said = jrft(args.code, "predict", str(run), f"--data={held}", "--max-new-tokens=48", *args.predict_flags,
                    capture=True)
        answers = [json.loads(line)["generated"] for line in said.stdout.strip().splitlines()]
        trained_on = json.loads(Path(data[0].partition("=")[2]).read_text(encoding="utf-8"))
        row.update(named=sum(NAME in text for text in answers), asked=len(answers), answers=answers,
                   held_out="English", english_naming_trained=len(english_naming(trained_on)))
    if task == "alpaca":
        scored = jrft(args.code, "eval", str(run), f"--data={held}", capture=True)
        row["held_out_perplexity"] = json.loads(scored.stdout)["perplexity"]
    return row


def key(row: dict) -> tuple:
    return row["task"], row["position"], row["lr"], row["d"], row["seed"]


def run(args) -> None:
    done = {key(json.loads(line)) for line in RESULTS.read_text().splitlines()} if RESULTS.exists() else set()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for task in args.cases:
        if args.defaults:
            if any(task == done_task and position == default_case(args.method) for done_task, position, *_ in done):
                continue
            with tempfile.TemporaryDirectory(prefix=f"default-{task}-") as folder:
                _record(run_default(task, args, Path(folder)))
            continue
        for position, lr, d in SETUPS[task][4]:
            if (task, position, lr, d, args.seed) in done:
                continue
            with tempfile.TemporaryDirectory(prefix=f"sweep-{task}-") as folder:
                _record(run_case(task, position, lr, d, args, Path(folder)))


def _record(row: dict) -> None:
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k not in ("curve", "answers")}), flush=True)


def table(args) -> None:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    print("| task | position | lr | d | best (metric) | best step / steps | named (of 10) | held-out ppl | step s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        scale = 1 if row["metric"] == "loss" else 100
        print(f"| {row['task']} | {row['position']} | {row['lr']:g} | {format(row['d'], ',') if row['d'] else '–'} | "
              f"{scale * row['best']:.{3 if scale == 1 else 1}f} ({row['metric']}) | {row['best_step']} / "
              f"{row['steps']} | {row.get('named', '–')} | {row.get('held_out_perplexity', '–')} | "
              f"{row['step_time_s']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser("run")
    sweep.add_argument("--cases", nargs="+", choices=sorted(SETUPS), default=list(SETUPS))
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--code", type=Path, help="a copy of the package to run (PYTHONPATH)")
    sweep.add_argument("--defaults", action="store_true",
                       help="one run per task with the app's defaults instead of the grid")
    sweep.add_argument("--method", default="slash", help="the method of the --defaults runs")
    sweep.add_argument("--predict-flags", nargs="*", default=[],
                       help="decoding flags for the identity answers (default: the code's own defaults)")
    commands.add_parser("table")
    args = parser.parse_args()
    (run if args.command == "run" else table)(args)


if __name__ == "__main__":
    main()
