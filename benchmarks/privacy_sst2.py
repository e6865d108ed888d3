"""What private training costs: DP-SGD against ordinary training on SST-2 with the bundled default model.

    python benchmarks/privacy_sst2.py steps      # step time DP ÷ non-DP for slash and full, peak memory
    python benchmarks/privacy_sst2.py accuracy   # test accuracy at ε = 3 and ε = 8 for slash, head, lora, full

`steps` times, in one process, a DP-SGD step (the trainer's: Poisson sampling, exact per-example gradients,
clipping, noise, accounting and the live ε) against an ordinary optimizer step on the same fixed batch of real
sentences, alternating the two so that this shared machine's load changes fall on both alike (the first of each
is a warm-up). Peak memory is per configuration, so each is measured in a process of its own (`memory`).
`accuracy` trains every method on the same rows with the same schedule and scores the GLUE SST-2 test.tsv
(872 labelled sentences). Data: /work/shared/data/sst2 (or --data-dir)."""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from jrft_desktop.core.build import build_model
from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, Privacy, RunConfig, TrainingSpec
from jrft_desktop.core.train.loop import Trainer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
METHODS = {"slash": MethodSpec(name="slash", d=1024), "head": MethodSpec(name="head"),
           "lora": MethodSpec(name="lora", rank=8), "full": MethodSpec(name="full")}


def config(data_dir: Path, method: str, privacy: Privacy, rows: int, max_length: int, **budget) -> RunConfig:
    return RunConfig(model=ModelSpec(), data=DataSpec(train=str(data_dir / "train.tsv"),
                                                      validation=str(data_dir / "test.tsv"), max_length=max_length,
                                                      max_train_rows=rows),
                     method=METHODS[method], training=TrainingSpec(device="cpu", **budget), privacy=privacy)


def train(run_config: RunConfig, folder: Path) -> dict:
    return dict(Trainer(run_config, folder).run().metrics)


def _step_setup(args, method: str, private: bool):
    """The bundled model with `method`, a fixed batch of real SST-2 sentences, and a step function: an ordinary
    optimizer step, or a DP-SGD step (sampling, per-example gradients, clipping, noise, accounting, live ε)."""
    from jrft_desktop.core.models import load_backbone
    from jrft_desktop.core.tasks.classify import Encoder, load_task_data
    from jrft_desktop.core.train.privacy import PrivateTraining, plan_privacy

    torch.manual_seed(0)
    data = load_task_data(DataSpec(train=str(args.data_dir / "train.tsv"), validation=str(args.data_dir / "test.tsv"),
                                   max_train_rows=args.rows), seed=0)
    loaded = load_backbone(ModelSpec())
    model, method_object, _ = build_model(ModelSpec(), METHODS[method], None, data.num_labels, loaded=loaded)
    encoder = Encoder(loaded.tokenizer, args.max_length, model)
    rows, _ = encoder.encode(data.train.texts[:args.batch_size])
    inputs, labels = encoder.collate(rows), torch.tensor(data.train.labels[:args.batch_size])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train(False)

    loss_fn = model.task.loss_function(data.task)

    if not private:
        def step() -> None:
            loss_fn(model(**inputs), labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step
    steps = math.ceil(len(data.train) / args.batch_size)  # one epoch
    plan = plan_privacy(Privacy(epsilon=8.0), len(data.train), args.batch_size, steps)
    dp = PrivateTraining(plan, model, optimizer, torch.device("cpu"), method=method_object)

    def private_step() -> None:
        dp.sample()  # drawn as in training; the timed batch stays the same fixed one
        dp.step(model, [(inputs, labels)], loss_fn)
        dp.epsilon(live=True)
    return private_step


def step_times(args) -> None:
    cases = [(method, private) for method in args.methods for private in (False, True)]
    memory = {case: peak_memory(args, *case) for case in cases}
    wall: dict[tuple[str, bool], list[float]] = {case: [] for case in cases}
    cpu: dict[tuple[str, bool], list[float]] = {case: [] for case in cases}
    for method in args.methods:
        steps = {private: _step_setup(args, method, private) for private in (False, True)}
        for private in (False, True):
            steps[private]()  # warm-up, not timed
        for _ in range(args.rounds):  # alternating, so load changes fall on both alike
            for private in (False, True):
                started, cpu_started = time.perf_counter(), time.process_time()
                steps[private]()
                wall[(method, private)].append(time.perf_counter() - started)
                cpu[(method, private)].append(time.process_time() - cpu_started)
        print(f"{method} timed", file=sys.stderr, flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} alternating steps each on "
          f"one fixed batch of {args.batch_size} real SST-2 sentences (max length {args.max_length}); DP: ε = 8, "
          f"Poisson sampling over {args.rows} rows, per-example gradients, clipping, noise, PRV accounting; CPU: "
          "the process's CPU seconds (all threads), which other programs' load moves less than the wall time")
    print("| method | non-DP step s | DP step s | DP ÷ non-DP | CPU DP ÷ non-DP | non-DP peak MB | DP peak MB |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods:
        plain, private = statistics.median(wall[(method, False)]), statistics.median(wall[(method, True)])
        cpu_ratio = statistics.median(cpu[(method, True)]) / statistics.median(cpu[(method, False)])
        print(f"| {method} | {plain:.3f} | {private:.3f} | {private / plain:.2f} | {cpu_ratio:.2f} | "
              f"{memory[(method, False)]:.0f} | {memory[(method, True)]:.0f} |")


def peak_memory(args, method: str, private: bool) -> float:
    """Peak resident memory of two steps of this configuration, each in a process of its own."""
    command = [sys.executable, __file__, "memory", "--method", method, "--rows", str(args.rows),
               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--data-dir",
               str(args.data_dir), *(["--private"] if private else [])]
    return float(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip())


def memory(args) -> None:
    step = _step_setup(args, args.methods[0], args.private)
    step()
    step()
    # VmHWM, not getrusage: on Linux a child's ru_maxrss starts at its parent's peak, VmHWM at the new image's
    peak_kib = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("VmHWM:"))
    print(peak_kib / 1024)


def accuracy(args) -> None:
    budget = {"epochs": args.epochs, "batch_size": args.batch_size, "eval_every": 10**6, "warmup_ratio": 0.0,
              "schedule": "constant"}
    results = []
    with tempfile.TemporaryDirectory() as temp:
        for method in args.methods:
            for epsilon in args.epsilons:
                started = time.perf_counter()
                run_config = config(args.data_dir, method, Privacy(epsilon=epsilon), args.rows, args.max_length,
                                    **budget)
                metrics = train(run_config, Path(temp) / f"{method}-{epsilon}")
                results.append((method, epsilon, metrics))
                print(f"{method} ε={epsilon}: accuracy {metrics['accuracy']:.4f} "
                      f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    first = results[0][2]["privacy"]
    print(f"SST-2: {args.rows} training rows drawn from train.tsv (seed 0), scored on test.tsv "
          f"({results[0][2]['validation_examples']} sentences); every run {first['planned_steps']} steps "
          f"({args.epochs:g} epochs) at expected batch {args.batch_size}, constant learning rate (each method's "
          f"default), max length {args.max_length}, C = 1, δ = {first['delta']:.2g}, PRV accountant")
    print("| method | trainable | ε target | ε spent | σ | test accuracy |")
    print("|---|---|---|---|---|---|")
    for method, epsilon, metrics in results:
        record = metrics["privacy"]
        print(f"| {method} | {metrics['trainable_params']:,} | {epsilon:g} | {record['epsilon_spent']:.3f} | "
              f"{record['noise_multiplier']:.3f} | {metrics['accuracy']:.4f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("steps", "accuracy", "memory"))
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--rows", type=int, default=2000, help="training rows drawn from train.tsv")
    parser.add_argument("--rounds", type=int, default=8, help="steps: timed steps of each kind")
    parser.add_argument("--epochs", type=float, default=2.0, help="accuracy: epochs of every run")
    parser.add_argument("--methods", "--method", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--private", action="store_true", help="memory: the DP-SGD step")
    parser.add_argument("--epsilons", nargs="+", type=float, default=[3.0, 8.0])
    args = parser.parse_args()
    {"steps": step_times, "accuracy": accuracy, "memory": memory}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
