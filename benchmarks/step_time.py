"""Training step time of every method, measured round-robin in one process on the same batches.

Interleaving the methods (a few steps of each, repeated) spreads this shared machine's load changes over all
of them alike, so the ratios to full finetuning are trustworthy even when absolute times drift; the CPU seconds
per step (run it with OMP_NUM_THREADS=1) move even less with the load. The timing loop
is the one `jrft bench` uses (jrft_desktop/core/bench.py); this script adds the on-the-fly projection case.

    python benchmarks/step_time.py --rounds 8 --steps-per-round 5
    python benchmarks/step_time.py --model bundled:SmolLM2-135M-Instruct --batch-size 16 --rounds 3 \
        --steps-per-round 2 --only slash-output slash-intermediate slash-attention head lora full
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from jrft_desktop.core import bench
from jrft_desktop.core.config import MethodSpec, ModelSpec
from jrft_desktop.core.tasks import task_for
from jrft_desktop.core.tasks.classify import load_task_data

CASES = (
    *(bench.BenchCase(f"slash-{position}", MethodSpec(name="slash", d=1024, position=position))
      for position in ("output", "intermediate", "attention")),
    bench.BenchCase("slash-output-on-the-fly", MethodSpec(name="slash", d=1024, position="output", on_the_fly=True)),
    bench.BenchCase("jr-warp", MethodSpec(name="jr-warp", d=1024)),
    bench.BenchCase("head", MethodSpec(name="head")),
    bench.BenchCase("bitfit", MethodSpec(name="bitfit")),
    bench.BenchCase("lora", MethodSpec(name="lora", rank=8)),
    bench.BenchCase("vera", MethodSpec(name="vera", rank=256)),
    bench.BenchCase("warp", MethodSpec(name="warp", prompt_tokens=8)),
    bench.BenchCase("full", MethodSpec(name="full")),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--model", default=ModelSpec().name_or_path)
    parser.add_argument("--only", nargs="*", help="Time just these cases (labels as printed).")
    args = parser.parse_args()

    cases = tuple(case for case in CASES if not args.only or case.label in args.only)
    settings = bench.BenchSettings(model=ModelSpec(args.model), data=bench.sample_data(args.max_length), cases=cases,
                                   batch_size=args.batch_size)
    device = torch.device("cpu")
    data = load_task_data(settings.data, seed=0)
    runs = {case.label: bench.prepare_case(settings, case.method, data.num_labels, data.task, device)
            for case in cases}
    encoder = next(iter(runs.values())).encoder
    task = task_for(settings.data.task, settings.data.train)
    batches = bench.first_batches(task, encoder, data.train, args.batch_size, args.steps_per_round, device)
    times = bench.interleaved_step_times(
        runs, batches, device, args.rounds,
        lambda index: print(f"round {index}/{args.rounds} done", file=sys.stderr, flush=True))

    full_wall, full_cpu = statistics.median(times["full"].wall), statistics.median(times["full"].cpu)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, max length "
          f"{args.max_length}, {args.rounds} x {args.steps_per_round} timed steps per method")
    print("| method | trainable (with head) | median step s | step ÷ full | CPU s | CPU ÷ full |")
    print("|---|---|---|---|---|---|")
    for label, case in runs.items():
        wall, cpu = statistics.median(times[label].wall), statistics.median(times[label].cpu)
        plan = case.plan
        print(f"| {label} | {plan.method_params:,} ({plan.trainable_params:,}) | {wall:.3f} | {wall / full_wall:.2f} "
              f"| {cpu:.3f} | {cpu / full_cpu:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
