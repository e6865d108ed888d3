"""The generate task side by side (issue 29): this app's SLaSh and LoRA against the peer a user would pick, PEFT LoRA
rank 8 on q_proj / v_proj through the Hugging Face `Trainer` (bf16 autocast, no gradient checkpointing), on the same
Alpaca rows (`../shared/data/instruct/alpaca_en_demo.json`) encoded by the same encoder (the chat template; the loss
on the answers' tokens only), batch 8, length 256. Each (model, system) runs in a fresh process, so its peak RSS is
its own; the step time is the median of the steps after the first.

    python benchmarks/generate_side_by_side.py --models smollm2 qwen2.5-0.5b --steps 4 --out /tmp/side.json

Models: the bundled SmolLM2-135M-Instruct (`smollm2`) and Gemma 3 270M (`gemma3`), and the random-weight
Qwen2.5-shaped decoders of benchmarks/shaped_models.py. Systems: `peer` (the Trainer, reusing peer_lora_trainer.py's
approach: PEFT's own recipe, the Trainer's defaults otherwise), `slash` and `lora` (`jrft train` defaults: bf16 where
the CPU has it, the frozen base in bf16, the chunked language-model loss; batches not grouped by length, as the
peer's are not). The jrft runs also record their memory estimate beside their peak RSS. Each child process runs under
the shared lock of the other benchmarks (`flock /tmp/jrft-heavy.lock`), so that no other heavy job runs beside it."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "instruct" / "alpaca_en_demo.json"
SYSTEMS = ("peer", "slash", "lora")
# --checkpointing: the app's own choice (on where the activations would outgrow the model), or forced either way
CHECKPOINTING = {"auto": None, "on": True, "off": False}
LOCK = os.environ.get("JRFT_BENCH_LOCK", "/tmp/jrft-heavy.lock")  # one heavy job at a time on a shared machine


def model_path(name: str) -> str:
    bundled = {"smollm2": "bundled:SmolLM2-135M-Instruct", "gemma3": "bundled:gemma-3-270m"}
    if name in bundled:
        return bundled[name]
    sys.path.insert(0, str(Path(__file__).parent))
    from shaped_models import build

    return str(build(name))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_peer(model: str, batch: int, length: int, steps: int) -> dict:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from jrft_desktop.core.config import DataSpec
    from jrft_desktop.core.models import resolve_source
    from jrft_desktop.core.tasks import get_task

    task = get_task("generate")
    data = task.load_data(DataSpec(train=str(DATA), task="generate", max_length=length), 0)

    source = resolve_source(model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    from types import SimpleNamespace

    # the app's encoder (chat template, answers' tokens as targets) needs only these of a model
    stand_in = SimpleNamespace(pooling="last", positions=lambda: None, prompt_count=lambda: 0, uses_token_types=False)
    encoder = task.make_encoder(tokenizer, length, stand_in, DataSpec(train=str(DATA)))
    rows, _ = encoder.encode(data.train)
    examples = [{"input_ids": list(row["input_ids"]), "labels": list(row["targets"])} for row in rows]

    def collate(items):
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), width), -100, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for index, item in enumerate(items):
            ids[index, :len(item["input_ids"])] = torch.tensor(item["input_ids"])
            labels[index, :len(item["labels"])] = torch.tensor(item["labels"])
            mask[index, :len(item["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    torch.manual_seed(0)
    loaded = AutoModelForCausalLM.from_pretrained(source)
    loaded = get_peft_model(loaded, LoraConfig(task_type=TaskType.CAUSAL_LM, r=8, lora_alpha=16, lora_dropout=0.05,
                                               target_modules=["q_proj", "v_proj"]))
    times = []

    class Timing(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.tick = time.perf_counter()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.tick)

    with tempfile.TemporaryDirectory() as output:
        arguments = TrainingArguments(output_dir=output, max_steps=steps, per_device_train_batch_size=batch,
                                      learning_rate=2e-4, seed=0, save_strategy="no", eval_strategy="no",
                                      logging_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                                      dataloader_num_workers=0, bf16=True)
        Trainer(model=loaded, args=arguments, train_dataset=examples, data_collator=collate,
                callbacks=[Timing()]).train()
    return {"step_s": statistics.median(times[1:] or times), "steps": len(times)}


def run_jrft(model: str, method: str, batch: int, length: int, steps: int, checkpointing: str = "auto",
             on_the_fly: bool = False) -> dict:
    from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, RunConfig, TrainingSpec
    from jrft_desktop.core.events import StepEvent
    from jrft_desktop.core.train.loop import Trainer

    times = []
    config = RunConfig(model=ModelSpec(model), method=MethodSpec(name=method, on_the_fly=on_the_fly),
                       data=DataSpec(train=str(DATA), task="generate", max_length=length, max_validation_rows=8),
                       # the peer's batches are not grouped by length: neither are these (the same rows' lengths)
                       training=TrainingSpec(max_steps=steps, batch_size=batch, eval_every=steps, device="cpu",
                                             group_by_length=False,
                                             gradient_checkpointing=CHECKPOINTING[checkpointing]))
    with tempfile.TemporaryDirectory() as folder:
        finished = Trainer(config, Path(folder) / "run",
                           [lambda event: times.append(event.step_time_s) if isinstance(event, StepEvent) else None]
                           ).run()
    metrics = finished.metrics
    return {"step_s": statistics.median(times[1:] or times), "steps": len(times),
            "estimated_mb": metrics.get("estimated_memory_mb"), "checkpointing": metrics.get("gradient_checkpointing"),
            "base_dtype": metrics.get("base_dtype"),
            "precision": metrics.get("precision")}


def child(args) -> int:
    import torch

    model = model_path(args.model)
    started = time.perf_counter()
    if args.system == "peer":
        found = run_peer(model, args.batch, args.length, args.steps)
    else:
        found = run_jrft(model, args.system, args.batch, args.length, args.steps, args.checkpointing, args.on_the_fly)
    variant = "".join(f" ({name})" for name, asked in ((f"checkpointing {args.checkpointing}",
                                                         args.checkpointing != "auto"),
                                                        ("on the fly", args.on_the_fly)) if asked)
    print(json.dumps({"model": args.model, "system": args.system + variant,
                      "peak_mb": round(peak_mb()),
                      "wall_s": round(time.perf_counter() - started, 1), "threads": torch.get_num_threads(),
                      **found}), flush=True)
    return 0


def table(results: list[dict]) -> str:
    lines = ["| model | system | peak RSS (GB) | ÷ peer's | step (s) | ÷ peer's | estimate (GB) |",
             "|---|---|---|---|---|---|---|"]
    for result in results:
        if "error" in result:
            lines.append(f"| {result['model']} | {result['system']} | failed: {result['error']} | | | | |")
            continue
        peer = next((r for r in results if r["model"] == result["model"] and r["system"] == "peer"
                     and "error" not in r), None)
        memory = f"{result['peak_mb'] / peer['peak_mb']:.2f}" if peer else "–"
        speed = f"{result['step_s'] / peer['step_s']:.2f}" if peer else "–"
        estimate = f"{result['estimated_mb'] / 1024:.2f}" if result.get("estimated_mb") else "–"
        lines.append(f"| {result['model']} | {result['system']} | {result['peak_mb'] / 1024:.2f} | {memory} | "
                     f"{result['step_s']:.1f} | {speed} | {estimate} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2", "gemma3", "qwen2.5-0.5b", "qwen2.5-1.5b"])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--checkpointing", choices=sorted(CHECKPOINTING), default="auto",
                        help="jrft systems' gradient checkpointing (the peer never has it).")
    parser.add_argument("--on-the-fly", action="store_true",
                        help="slash with its projections regenerated in every step (--on-the-fly).")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    results = []
    for model in args.models:
        for system in args.systems:
            done = subprocess.run(["flock", LOCK, sys.executable, __file__, "--child", "--model", model, "--system", system,
                                   "--batch", str(args.batch), "--length", str(args.length), "--steps",
                                   str(args.steps), "--checkpointing", args.checkpointing,
                                   *(["--on-the-fly"] if args.on_the_fly else [])],
                                  capture_output=True, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            result = json.loads(lines[-1]) if done.returncode == 0 and lines else {
                "model": model, "system": system, "error": (done.stderr.strip().splitlines() or ["?"])[-1][:200]}
            results.append(result)
            print(json.dumps(result), flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=2))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
