"""GLUE fidelity trained to convergence (issue 21): RTE, CoLA and SST-2, every method, early stopping on a
validation split carved from the training file, the GLUE dev file used only for the final score.

    python benchmarks/glue_convergence.py run --tasks rte --cases slash-intermediate full --seeds 0 1
    python benchmarks/glue_convergence.py run --tasks rte --cases slash-intermediate --d 1024 --tag d1024
    python benchmarks/glue_convergence.py report           # the Markdown table from results.jsonl

Each training is one `jrft train` process (under `flock /tmp/jrft-heavy.lock`, so that trainings sharing the
machine take turns), with `--validation-fraction 0.1` (a seeded, stratified 10% of the training rows: the early
stopping split), `--epochs` per task, an evaluation every `eval_every` steps, `--early-stopping PATIENCE`
(evaluations without improvement) and the trainer's best-validation checkpoint; then `jrft eval` scores that
checkpoint on the GLUE dev file. Every finished (task, case, seed, tag) appends one line to `results.jsonl` in
--out, so an interrupted bench continues where it stopped (a half-trained run folder is resumed from its
checkpoint)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LOCK = "/tmp/jrft-heavy.lock"

# Per task: files, metric, input length (covers the task's inputs: RTE's pairs are long), the epoch ceiling and how
# often to evaluate (about 4 times an epoch); early stopping ends most runs before the ceiling.
TASKS = {
    "rte": {"train": DATA / "rte" / "train.tsv", "dev": DATA / "rte" / "validation.tsv", "metric": "accuracy",
            "max_length": 128, "epochs": 5, "eval_every": 20, "patience": 5, "train_rows": None},
    "cola": {"train": DATA / "cola" / "train.tsv", "dev": DATA / "cola" / "validation.tsv", "metric": "matthews",
             "max_length": 48, "epochs": 5, "eval_every": 60, "patience": 5, "train_rows": None},
    "sst2": {"train": DATA / "sst2" / "train.tsv", "dev": DATA / "sst2" / "test.tsv", "metric": "accuracy",
             "max_length": 64, "epochs": 2, "eval_every": 85, "patience": 4, "train_rows": 12000},
}

# label -> `jrft train` flags. Sized methods at d = 4,096, which with a two-class head (770) stays within 5,000.
CASES = {
    "slash-intermediate": ["--method", "slash", "--position", "intermediate", "--d", "4096"],
    "slash-output": ["--method", "slash", "--position", "output", "--d", "4096"],
    "slash-attention": ["--method", "slash", "--position", "attention", "--d", "4096"],
    "slash-intermediate-mask": ["--method", "slash", "--position", "intermediate", "--d", "4096",
                                "--pooling", "mask"],
    "slash-output-mask": ["--method", "slash", "--position", "output", "--d", "4096", "--pooling", "mask"],
    "jr-warp": ["--method", "jr-warp", "--d", "4096"],
    "head": ["--method", "head"],
    "bitfit": ["--method", "bitfit"],
    "lora-r8": ["--method", "lora", "--rank", "8"],
    "vera": ["--method", "vera"],
    "full": ["--method", "full"],
}


def _results(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _override(flags: list[str], name: str, value: str | None) -> list[str]:
    """flags with `name value` set (replaced when present, appended otherwise); value None leaves them."""
    if value is None:
        return flags
    flags = list(flags)
    if name in flags:
        flags[flags.index(name) + 1] = value
    else:
        flags += [name, value]
    return flags


def _where(args) -> dict:
    """subprocess.run's cwd and env: with --code, the engine imported from that folder (a snapshot of the package,
    e.g. `git archive HEAD jrft_desktop | tar -x -C DIR`), run from a folder that holds no other copy of it."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    if not args.code:
        return {"env": env}
    return {"cwd": args.code, "env": {**env, "PYTHONPATH": str(Path(args.code).resolve())}}


def train_one(out: Path, task: str, case: str, seed: int, args) -> dict:
    spec = TASKS[task]
    tag = args.tag or "default"
    run_dir = out / "runs" / task / f"{case}-{tag}-seed{seed}"
    flags = _override(CASES[case], "--d", str(args.d) if args.d else None)
    flags = _override(flags, "--lr", str(args.lr) if args.lr else None)
    epochs = args.epochs if args.epochs is not None else spec["epochs"]
    patience = args.patience if args.patience is not None else spec["patience"]
    command = [sys.executable, "-m", "jrft_desktop.cli", "train", "--data", str(spec["train"]),
               "--validation-fraction", "0.1", "--metric", spec["metric"], "--max-length", str(spec["max_length"]),
               "--batch-size", str(args.batch_size), "--epochs", str(epochs),
               "--eval-every", str(args.eval_every or spec["eval_every"]), "--early-stopping", str(patience),
               "--seed", str(seed), "--device", "cpu", "--output", str(run_dir), *flags, *args.extra]
    if spec["train_rows"]:
        command += ["--max-train-rows", str(spec["train_rows"])]
    if (run_dir / "metrics.json").is_file():
        pass  # trained earlier, not yet scored on dev
    else:
        if run_dir.exists() and not any(run_dir.glob("checkpoint*")):
            shutil.rmtree(run_dir)  # a folder without a checkpoint: nothing to resume
        if run_dir.exists():  # stopped half-way: continue from its checkpoint
            command = [*command[:4], "--resume", "--output", str(run_dir)]
        print(" ".join(command), file=sys.stderr, flush=True)
        lock = [] if args.no_lock else ["flock", LOCK]
        subprocess.run([*lock, *command], check=True, stdout=subprocess.DEVNULL, **_where(args))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Scoring is inference on a few hundred rows (seconds): it does not queue for the training lock.
    scored = subprocess.run([sys.executable, "-m", "jrft_desktop.cli", "eval", str(run_dir),
                             "--data", str(spec["dev"]), "--device", "cpu"],
                            check=True, capture_output=True, text=True, **_where(args))
    dev = json.loads(scored.stdout)
    history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").is_file() else []
    train_examples = metrics["train_examples"]
    steps_per_epoch = -(-train_examples // args.batch_size)
    return {
        "task": task, "case": case, "seed": seed, "tag": tag, "flags": flags, "extra": args.extra,
        "metric": spec["metric"], "dev": dev[spec["metric"]], "dev_all": dev,
        "validation": metrics.get(spec["metric"]), "best_step": metrics["best_step"],
        "train_steps": metrics["train_steps"], "epochs_run": metrics["train_steps"] / steps_per_epoch,
        "best_epoch": (metrics["best_step"] or 0) / steps_per_epoch, "status": metrics["status"],
        "trainable": metrics["trainable_params"], "trainable_without_head": metrics["trainable_params_without_head"],
        "lr": metrics["lr"], "wall_time_s": metrics["wall_time_s"], "step_time_s": metrics["step_time_s"],
        "train_examples": train_examples, "max_length": spec["max_length"], "batch_size": args.batch_size,
        "epochs_max": epochs, "patience": patience, "curve": [
            {"step": h.get("step"), "eval": (h.get("eval") or {}).get(spec["metric"])}
            for h in history if h.get("eval")],
    }


def cmd_run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = {(r["task"], r["case"], r["seed"], r["tag"]) for r in _results(out)}
    for task in args.tasks:
        for seed in args.seeds:
            for case in args.cases:
                key = (task, case, seed, args.tag or "default")
                if key in done:
                    continue
                started = time.time()
                record = train_one(out, task, case, seed, args)
                with open(out / "results.jsonl", "a") as f:
                    f.write(json.dumps(record, sort_keys=True) + "\n")
                print(f"{task} {case} seed {seed} [{record['tag']}]: dev {record['metric']} {record['dev']:.4f}, "
                      f"validation {record['validation']:.4f}, best step {record['best_step']} of "
                      f"{record['train_steps']} ({record['status']}), {time.time() - started:.0f} s",
                      file=sys.stderr, flush=True)
    return 0


def _fmt(values: list[float]) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def cmd_report(args) -> int:
    results = _results(Path(args.out))
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["task"], r["case"], r["tag"]), []).append(r)
    print("| task | method | setting | lr | seeds | dev score × 100 | Δ vs full | ÷ full (paper: ≥ 95%) "
          "| validation × 100 | trainable (with head) | best epoch / epochs run | steps run | wall time per run |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for task in TASKS:
        full = groups.get((task, "full", "default"))
        full_mean = statistics.mean(r["dev"] for r in full) if full else None
        for (t, case, tag), rows in sorted(groups.items(), key=lambda kv: (list(CASES).index(kv[0][1]), kv[0][2])):
            if t != task:
                continue
            mean = statistics.mean(r["dev"] for r in rows)
            delta = f"{100 * (mean - full_mean):+.1f}" if full_mean is not None and case != "full" else "–"
            within = ("–" if full_mean is None or case == "full" or full_mean <= 0
                      else f"{100 * mean / full_mean:.1f}% ({'yes' if mean >= 0.95 * full_mean else 'no'})")
            r0 = rows[0]
            lrs = "/".join(f"{lr:g}" for lr in sorted({r["lr"] for r in rows}))
            print(f"| {task} | {case} | {tag} | {lrs} | {len(rows)} | {_fmt([r['dev'] for r in rows])} | {delta} | "
                  f"{within} | "
                  f"{_fmt([r['validation'] for r in rows])} | "
                  f"{r0['trainable_without_head']:,} ({r0['trainable']:,}) | "
                  f"{statistics.mean(r['best_epoch'] for r in rows):.1f} / "
                  f"{statistics.mean(r['epochs_run'] for r in rows):.1f} | "
                  f"{round(statistics.mean(r['train_steps'] for r in rows))} | "
                  f"{statistics.mean(r['wall_time_s'] for r in rows) / 60:.1f} min |")
    return 0


def _d(row: dict) -> int:
    flags = row["flags"]
    return int(flags[flags.index("--d") + 1])


def cmd_curves(args) -> int:
    """The gap to full finetuning against d (SLaSh at one learning rate, every d run) and against steps (the
    validation curves of SLaSh and full finetuning, mean over seeds at each evaluation)."""
    results = [r for r in _results(Path(args.out)) if r["task"] == args.task]
    full = [r for r in results if r["case"] == "full" and r["tag"] == "default"]
    if not full:
        print(f"No full finetuning run of {args.task} yet.", file=sys.stderr)
        return 1
    full_dev, full_val = (statistics.mean(r[key] for r in full) for key in ("dev", "validation"))
    slash = [r for r in results if r["case"] == args.case and abs(r["lr"] - args.lr) < 1e-12]
    print(f"{args.task}: {args.case} at lr {args.lr:g} against full finetuning (dev {100 * full_dev:.1f}, "
          f"validation {100 * full_val:.1f})\n")
    print("| d | trainable (with head) | seeds | dev × 100 | Δ dev | validation × 100 | Δ validation | best step |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for d in sorted({_d(r) for r in slash}):
        rows = [r for r in slash if _d(r) == d]
        dev, val = (statistics.mean(r[key] for r in rows) for key in ("dev", "validation"))
        print(f"| {d:,} | {rows[0]['trainable']:,} | {len(rows)} | {100 * dev:.1f} | {100 * (dev - full_dev):+.1f} "
              f"| {100 * val:.1f} | {100 * (val - full_val):+.1f} | "
              f"{round(statistics.mean(r['best_step'] for r in rows))} |")
    at_d = [r for r in slash if _d(r) == args.d]
    curves = {}  # name -> step -> the mean validation score of the seeds evaluated at that step
    for name, rows in (("slash", at_d), ("full", full)):
        scores: dict[int, list[float]] = {}
        for r in rows:
            for point in r["curve"]:
                scores.setdefault(point["step"], []).append(point["eval"])
        curves[name] = {step: statistics.mean(values) for step, values in scores.items()}
    steps = sorted(set(curves["slash"]) & set(curves["full"]))
    print(f"\nValidation score × 100 at each evaluation, d = {args.d:,}: mean of the seeds still running at that "
          "step\n")
    print("| step | " + " | ".join(str(step) for step in steps) + " |")
    print("|---|" + "---:|" * len(steps))
    for name in ("slash", "full"):
        print(f"| {name} | " + " | ".join(f"{100 * curves[name][step]:.1f}" for step in steps) + " |")
    gaps = (f"{100 * (curves['slash'][step] - curves['full'][step]):+.1f}" for step in steps)
    print("| Δ | " + " | ".join(gaps) + " |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/glue")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="Train and score the missing (task, case, seed) runs.")
    run.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    run.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--epochs", type=float, help="Epoch ceiling (default: the task's).")
    run.add_argument("--eval-every", type=int, help="Steps between evaluations (default: the task's).")
    run.add_argument("--patience", type=int, help="Evaluations without improvement before stopping.")
    run.add_argument("--d", type=int, help="Override d of the sized cases (SLaSh, JR-WARP).")
    run.add_argument("--lr", type=float, help="Override the method's default learning rate.")
    run.add_argument("--tag", help="Name of this setting in results.jsonl (needed with any override).")
    run.add_argument("--code", help="Folder holding the jrft_desktop package to run (a snapshot that edits to the "
                     "working tree cannot change mid-bench); default: the installed one.")
    run.add_argument("--threads", type=int, help="Torch threads per run (OMP_NUM_THREADS); 1 keeps a run's speed "
                     "steady when other programs share the cores.")
    run.add_argument("--no-lock", action="store_true", help=f"Do not take {LOCK} per training (the caller "
                     "holds it: `flock LOCK python benchmarks/glue_convergence.py run --no-lock ...`).")
    run.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="More `jrft train` flags, last.")
    run.set_defaults(handler=cmd_run)
    report = sub.add_parser("report", help="Print the Markdown table of results.jsonl.")
    report.set_defaults(handler=cmd_report)
    curves = sub.add_parser("curves", help="Print the gap to full finetuning against d and against steps.")
    curves.add_argument("--task", choices=list(TASKS), default="rte")
    curves.add_argument("--case", choices=list(CASES), default="slash-intermediate")
    curves.add_argument("--lr", type=float, default=1e-2, help="The SLaSh runs' learning rate.")
    curves.add_argument("--d", type=int, default=4096, help="d of the SLaSh runs whose curve is shown.")
    curves.set_defaults(handler=cmd_curves)
    args = parser.parse_args()
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
