"""What a trained model gives away about its training data: the privacy audit (`jrft audit`) of full finetuning,
LoRA and SLaSh on SST-2 with 1,000 audit canaries, each non-private and at ε = 8 and ε = 3.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/audit_sst2.py --out /tmp/audit_sst2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/audit_sst2.py --out /tmp/audit_sst2 --default-run

Every run: the bundled default model, 1,000 rows drawn from `sst2/train.tsv` (seed 0) plus 1,000 generated canaries
(random word sequences with random labels, each trained on with probability ½), scored on 1,000 rows drawn from
`sst2/validation.tsv`; the app's defaults otherwise (each method's learning rate, linear schedule, batch 32), a fixed
number of steps. Then the audit of the finished run: the membership attack on the 1,000 training rows against the
1,000 validation rows, and the one-run lower bound on ε from the canaries (95 % confidence). Runs go one at a time;
a finished, audited run folder is reused. Writes results.json and results.md (the Markdown table of
docs/benchmarks.md) to --record (docs/benchmarks/audit).

--default-run instead trains a run with the app's defaults (SLaSh, the 10 % validation split, no canaries) on 2,000
rows of `sst2/train.tsv` and audits it: the issue's "audit ≤ 0.2× a default run's training time", in
default_run.json."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from jrft_desktop.core.audit.leakage import audit_run
from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, Privacy, RunConfig, TrainingSpec
from jrft_desktop.core.runs import read_audit
from jrft_desktop.core.train.loop import Trainer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
RECORD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "audit"
METHODS = {"full": MethodSpec(name="full"), "lora": MethodSpec(name="lora", rank=8),
           "slash": MethodSpec(name="slash", d=1024)}
BUDGETS = {"non-private": None, "ε = 8": 8.0, "ε = 3": 3.0}


def config(args, method: str, epsilon: float | None) -> RunConfig:
    return RunConfig(model=ModelSpec(),
                     data=DataSpec(train=str(args.data_dir / "train.tsv"), validation=str(args.data_dir /
                                                                                          "validation.tsv"),
                                   max_length=64, max_train_rows=args.rows, max_validation_rows=args.rows),
                     method=METHODS[method],
                     training=TrainingSpec(max_steps=args.steps, batch_size=32, eval_every=args.steps // 2,
                                           device="cpu"),
                     privacy=Privacy(epsilon=epsilon, audit_canaries=args.canaries))


def run_one(args, method: str, budget: str) -> dict:
    """Train (unless done) and audit one case; the CPU seconds of each (one torch thread: what they compute, much
    less shaken than the wall time by the other work on a shared machine)."""
    folder = args.out / f"{method}-{budget.replace(' ', '').replace('=', '')}"
    cpu_file = folder.parent / f"{folder.name}.cpu.json"
    cpu = json.loads(cpu_file.read_text(encoding="utf-8")) if cpu_file.is_file() else {}
    if not (folder / "metrics.json").is_file():
        started = time.process_time()
        Trainer(config(args, method, BUDGETS[budget]), folder).run()
        cpu = {"train_cpu_s": time.process_time() - started}
    audit = read_audit(folder)
    if audit is None or "audit_cpu_s" not in cpu:
        started = time.process_time()
        audit = audit_run(folder, "cpu")
        cpu["audit_cpu_s"] = time.process_time() - started
        cpu_file.write_text(json.dumps(cpu), encoding="utf-8")
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    return {"method": method, "privacy": budget, "accuracy": metrics["accuracy"], "mia_auc": audit["mia_auc"],
            "mia_tpr_at_1pct_fpr": audit["mia_tpr_at_1pct_fpr"], "epsilon_lower_bound": audit["epsilon_lower_bound"],
            "epsilon": audit.get("epsilon"), "one_run": audit["one_run"], "train_time_s": metrics["train_time_s"],
            "audit_time_s": audit["audit_time_s"], "trainable_params": metrics["trainable_params"], **cpu}


def table(results: list[dict]) -> str:
    lines = ["| method | privacy | validation accuracy | MIA AUC | TPR at 1 % FPR | ε lower bound (95 %) "
             "| accountant ε | guesses right | audit ÷ training (CPU s) | (wall s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in results:
        one_run = row["one_run"]
        epsilon = f"{row['epsilon']:.2f}" if row["epsilon"] is not None else "–"
        lines.append(f"| {row['method']} | {row['privacy']} | {100 * row['accuracy']:.1f} | {row['mia_auc']:.3f} | "
                     f"{100 * row['mia_tpr_at_1pct_fpr']:.1f} % | {row['epsilon_lower_bound']:.2f} | {epsilon} | "
                     f"{one_run['correct']} of {one_run['guesses']} | {row['audit_cpu_s']:.0f} ÷ "
                     f"{row['train_cpu_s']:.0f} = {row['audit_cpu_s'] / row['train_cpu_s']:.2f} | "
                     f"{row['audit_time_s']:.0f} ÷ {row['train_time_s']:.0f} |")
    return "\n".join(lines)


def default_run(args) -> dict:
    """Train (unless done) and audit a run of the app's defaults on 2,000 rows; the CPU and wall seconds of each."""
    folder = args.out / "default-run"
    times: dict = {}
    if not (folder / "metrics.json").is_file():
        cpu, wall = time.process_time(), time.perf_counter()
        Trainer(RunConfig(data=DataSpec(train=str(args.data_dir / "train.tsv"), max_train_rows=2000)), folder).run()
        times.update(train_cpu_s=time.process_time() - cpu, train_wall_s=time.perf_counter() - wall)
    cpu, wall = time.process_time(), time.perf_counter()
    audit = audit_run(folder, "cpu")
    times.update(audit_cpu_s=time.process_time() - cpu, audit_wall_s=time.perf_counter() - wall)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    return {**times, "train_time_s": metrics["train_time_s"], "audit_time_s": audit["audit_time_s"],
            "audit_over_training": audit["audit_time_s"] / metrics["train_time_s"], "steps": metrics["train_steps"],
            "accuracy": metrics["accuracy"], "mia_auc": audit["mia_auc"], "membership": audit["membership"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--rows", type=int, default=1000, help="training rows, and validation rows scored")
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--budgets", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--record", type=Path, default=RECORD, help="where the results are kept")
    parser.add_argument("--default-run", action="store_true", help="time the audit of a default run instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.record.mkdir(parents=True, exist_ok=True)
    if args.default_run:
        found = default_run(args)
        (args.record / "default_run.json").write_text(json.dumps(found, indent=2, sort_keys=True) + "\n",
                                                      encoding="utf-8")
        print(json.dumps(found, indent=2, sort_keys=True))
        return
    results = []
    for method in args.methods:
        for budget in args.budgets:
            started = time.monotonic()
            results.append(run_one(args, method, budget))
            print(f"{method} {budget}: {time.monotonic() - started:.0f} s", flush=True)
            (args.out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (args.record / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (args.record / "results.md").write_text(table(results) + "\n", encoding="utf-8")
    print(table(results))


if __name__ == "__main__":
    main()
