"""An int8 frozen base on this CPU (issue 29): SmolLM2's held-out Alpaca loss and the time and memory of a SLaSh
training step with its linear layers in torchao's weight-only int8, against the bf16 base, each in a fresh process.

    PYTHONPATH=<torchao> python benchmarks/quantized_base.py --rows 48 --steps 3

torchao is optional (pip install torchao); the output layer, embeddings and norms are not quantised."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "instruct" / "alpaca_en_demo.json"


def child(scheme: str, rows: int, steps: int, batch: int, length: int) -> dict:
    import torch

    from jrft_desktop.core.build import build_model
    from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec
    from jrft_desktop.core.models import load_backbone
    from jrft_desktop.core.tasks import get_task
    from jrft_desktop.core.tasks.generate import token_scores
    from jrft_desktop.core.train import precision as precisions
    from jrft_desktop.core.train.quantization import quantize_base
    from jrft_desktop.core.train.step import Optimization, first_batches

    cpu = torch.device("cpu")
    task, spec = get_task("generate"), ModelSpec("bundled:SmolLM2-135M-Instruct")
    data = task.load_data(DataSpec(train=str(DATA), task="generate", max_length=length), 0)
    loaded = load_backbone(spec, task, torch.bfloat16)
    model = build_model(spec, MethodSpec(name="slash"), task, 1, loaded=loaded).model
    precisions.keep_trainable_fp32(model)
    quantize_base(model, scheme, cpu)
    encoder = task.make_encoder(loaded.tokenizer, length, model, DataSpec(train=str(DATA)))
    held_out, _ = encoder.encode(data.validation.take(rows))
    tick = time.perf_counter()
    nll, tokens, right = token_scores(model, encoder, held_out, cpu, "bf16")
    scored = time.perf_counter() - tick
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    optimization = Optimization.create(model, optimizer, task.loss_function(data.problem), cpu, precision="bf16")
    times = []
    for inputs, labels in first_batches(task, encoder, data.train, batch, steps, cpu):
        tick = time.perf_counter()
        optimization.step(inputs, labels)
        times.append(time.perf_counter() - tick)
    return {"scheme": scheme, "held_out_loss": nll / tokens, "token_accuracy": right / tokens, "tokens": tokens,
            "score_s": scored, "step_s": statistics.median(times[1:] or times),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.steps, args.batch, args.length)), flush=True)
        return 0
    for scheme in ("none", "int8"):
        done = subprocess.run([sys.executable, __file__, "--child", scheme, "--rows", str(args.rows), "--steps",
                               str(args.steps), "--batch", str(args.batch), "--length", str(args.length)],
                              capture_output=True, text=True, check=False)
        print(done.stdout.strip() or done.stderr.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
