"""Which attention kernel a training step should run on a CPU under bf16: transformers' fused SDPA or eager attention
(what `precision.training_attention` picks). Each case is trained by the app's own trainer (its defaults: SLaSh,
bf16 where the CPU has it, batches grouped by length), once with each kernel forced, alternating, in one process,
twice; the second round is the one to read (the first pays oneDNN's first-shape costs). Training time only.

    python benchmarks/attention_kernels.py --out docs/benchmarks/attention_kernels.json
    python benchmarks/attention_kernels.py --cases rte sst2

Cases: RTE pairs at 128 tokens and SST-2 sentences at 64 (the bundled encoder, batch 32), and the bundled decoder
on the instruction demo set at 256 tokens (batch 8)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = {  # name: (data, model, task, max length, batch size, steps, row limit)
    "rte": (DATA / "rte" / "train.tsv", "bundled:all-MiniLM-L6-v2", "classify", 128, 32, 40, None),
    "sst2": (DATA / "sst2" / "train.tsv", "bundled:all-MiniLM-L6-v2", "classify", 64, 32, 150, 12_000),
    "decoder": (DATA / "instruct" / "alpaca_en_demo.json", "bundled:SmolLM2-135M-Instruct", "generate", 256, 8, 8,
                None),
}
KERNELS = ("sdpa", "eager")


def train(case: str, kernel: str, run_dir: Path) -> dict:
    from jrft_desktop.core.config import DataSpec, ModelSpec, RunConfig, TrainingSpec
    from jrft_desktop.core.train import precision
    from jrft_desktop.core.train.loop import Trainer

    source, model, task, length, batch, steps, rows = CASES[case]
    config = RunConfig(model=ModelSpec(model),
                       data=DataSpec(train=str(source), task=task, max_length=length, max_train_rows=rows),
                       training=TrainingSpec(max_steps=steps, eval_every=steps, batch_size=batch, device="cpu"))
    chosen = precision.training_attention
    # "sdpa": the model's own fused kernel (the switch off); "eager": the switch forced on, for decoders too
    precision.training_attention = (lambda *_: None) if kernel == "sdpa" else (lambda *_: "eager")
    try:
        metrics = Trainer(config, run_dir).run().metrics
    finally:
        precision.training_attention = chosen
    return {key: metrics[key] for key in ("step_time_s", "train_time_s", "train_steps", "precision", "padded_share")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, help="Write the timings here (JSON).")
    args = parser.parse_args(argv)

    import torch

    from jrft_desktop.core.train import precision

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for case in args.cases:
            for round_index in range(args.rounds):
                for kernel in KERNELS:
                    row = {"case": case, "round": round_index, "kernel": kernel,
                           **train(case, kernel, Path(scratch) / f"{case}-{kernel}-{round_index}")}
                    print(f"{case} round {round_index} {kernel:5}: median step {row['step_time_s']:.3f} s, "
                          f"training {row['train_time_s']:.1f} s for {row['train_steps']} steps ({row['precision']})",
                          flush=True)
                    rows.append(row)
    if args.out:
        record = {"cpu_features": list(precision.cpu_features()), "torch": torch.__version__,
                  "threads": torch.get_num_threads(), "rows": rows}
        args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
