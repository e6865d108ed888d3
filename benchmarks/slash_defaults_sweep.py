"""A small sweep of SLaSh's default learning rate, schedule and warmup, scored on a held-out part of each TRAINING
file (never the test files), to pick the defaults that reach a given accuracy in the fewest steps.

    python benchmarks/slash_defaults_sweep.py --data ../shared/data/sst2 --target 0.80 --out sweep_sst2.json
    python benchmarks/slash_defaults_sweep.py --data ../shared/data/agnews --target 0.85 --out sweep_agnews.json

Every run: the default method at its default size on a seeded sample of --train-rows rows of `train.tsv`, scored
every --eval-every steps on a seeded sample of --validation-rows rows of the seeded, stratified 10 % split that
the trainer holds out of the same file; batch 32, inputs up to 64 tokens, the app's other defaults (precision,
grouping by length). The grid: each --lrs at the current schedule (linear, 6 % warmup), then the best of those
with no warmup and with a constant rate."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def train(args, **settings) -> list[tuple[int, float]]:
    from jrft_desktop.core.config import DataSpec, ModelSpec, RunConfig, TrainingSpec
    from jrft_desktop.core.events import EvalEvent
    from jrft_desktop.core.train.loop import Trainer

    curve: list[tuple[int, float]] = []

    def listen(event) -> None:
        if isinstance(event, EvalEvent):
            curve.append((event.step, event.metrics["accuracy"]))

    config = RunConfig(model=ModelSpec(args.model),
                       data=DataSpec(train=str(args.data / "train.tsv"), max_length=64, max_train_rows=args.train_rows,
                                     max_validation_rows=args.validation_rows),
                       training=TrainingSpec(max_steps=args.steps, batch_size=32, eval_every=args.eval_every,
                                             seed=args.seed, device="cpu", **settings))
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(config, Path(run_dir) / "run", [listen]).run()
    print(f"{settings}: " + " ".join(f"{step}:{100 * accuracy:.1f}" for step, accuracy in curve), file=sys.stderr,
          flush=True)
    return curve


def steps_to(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, accuracy in curve if accuracy >= target), None)


def rank(entry: dict) -> tuple:
    """Fewer steps to the target first, then the higher best accuracy."""
    return (entry["steps_to_target"] or 10**9, -entry["best"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "sst2")
    parser.add_argument("--model", default="bundled:all-MiniLM-L6-v2")
    parser.add_argument("--train-rows", type=int, default=12000)
    parser.add_argument("--validation-rows", type=int, default=800)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-2, 3e-2, 1e-1, 3e-1])
    parser.add_argument("--target", type=float, default=0.80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    entries = []

    def run(**settings) -> dict:
        curve = train(args, **settings)
        entry = {"settings": settings, "curve": curve, "best": max(a for _, a in curve),
                 "final": curve[-1][1], "steps_to_target": steps_to(curve, args.target)}
        entries.append(entry)
        return entry

    for lr in args.lrs:
        run(lr=lr, schedule="linear", warmup_ratio=0.06)
    best = min(entries, key=rank)["settings"]["lr"]
    run(lr=best, schedule="linear", warmup_ratio=0.0)
    run(lr=best, schedule="constant", warmup_ratio=0.06)
    print(f"\n{args.data.name}: target {100 * args.target:g} %, {args.steps} steps, held-out rows of train.tsv\n")
    steps = [step for step, _ in entries[0]["curve"]]
    print("| lr | schedule | warmup | steps to target | best | final | " + " | ".join(f"@{s}" for s in steps) + " |")
    print("|" + "---|" * (6 + len(steps)))
    for entry in entries:
        s = entry["settings"]
        print(f"| {s['lr']:g} | {s['schedule']} | {s['warmup_ratio']:g} | {entry['steps_to_target'] or '–'} | "
              f"{100 * entry['best']:.1f} | {100 * entry['final']:.1f} | "
              + " | ".join(f"{100 * a:.1f}" for _, a in entry["curve"]) + " |")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": entries},
                                       indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
