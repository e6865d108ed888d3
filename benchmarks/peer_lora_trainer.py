"""The app against what a user would pick instead: PEFT LoRA (rank 8 on query and value, lr 1e-3) trained by the
Hugging Face `Trainer`, and `jrft train` with its defaults, on the same rows, in the same process and run.

    python benchmarks/peer_lora_trainer.py --data ../shared/data/sst2 --target 0.80
    python benchmarks/peer_lora_trainer.py --data ../shared/data/agnews --eval-rows 1000 --target 0.85

Both train on the same seeded sample of the training file (12,000 rows), batch 32, inputs up to 64 tokens, and are
scored every 50 steps on the same rows of the test file (all of them, or a seeded sample of --eval-rows). Timing
counts training only: each system's wall time since its training began, less the time its evaluations took.
Systems (--systems picks some):

- `peer`: `AutoModelForSequenceClassification` + `peft.get_peft_model(LoraConfig(task_type=SEQ_CLS, r=8,
  lora_alpha=16, lora_dropout=0.1, target_modules=[query, value]))` (PEFT's own sequence-classification example),
  `transformers.Trainer` with its defaults (AdamW, linear decay, no warmup, fp32 on a CPU, dynamic padding);
- `jrft`: `jrft train` defaults (the default method and settings: precision auto, batches grouped by length);
- `jrft-fp32`: the same with --precision fp32 (the same seed: bf16 against fp32 accuracy);
- `jrft-before`: the app before issue 20 (SLaSh lr 3e-2, 6 % warmup, linear decay, fp32, no length grouping).

Prints per system the accuracy curve, the median step time, the training time to --target, the best accuracy and
the ratio of the peer's time to target to each system's, and writes them to --out (JSON)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BEFORE = {"lr": 3e-2, "warmup_ratio": 0.06, "schedule": "linear", "precision": "fp32", "group_by_length": False}
SYSTEMS = ("peer", "jrft", "jrft-fp32", "jrft-before")


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False)


def columns(frame: pd.DataFrame) -> tuple[str, str]:
    text = next(name for name in frame.columns if name in ("sentence", "text"))
    return text, "label"


def prepare(args, folder: Path) -> tuple[Path, Path, list[str]]:
    """The sampled training rows and evaluation rows as TSV files both systems read; the label names in id order."""
    train, test = read(args.data / "train.tsv"), read(args.data / "test.tsv")
    train = train.sample(n=min(args.train_rows, len(train)), random_state=args.seed)
    if args.eval_rows:
        test = test.sample(n=min(args.eval_rows, len(test)), random_state=args.seed)
    names = sorted({str(label) for label in train["label"]})
    paths = folder / "train.tsv", folder / "test.tsv"
    for frame, path in zip((train, test), paths):
        frame.to_csv(path, sep="\t", index=False)
    return *paths, names


class Record:
    """One system's curve: (step, accuracy, training seconds so far) per evaluation, and its step times."""

    def __init__(self, name: str):
        self.name, self.curve, self.step_times, self.extra = name, [], [], {}

    def summary(self, target: float) -> dict:
        reached = next(((step, seconds) for step, accuracy, seconds in self.curve if accuracy >= target), None)
        return {"system": self.name, "curve": self.curve,
                "step_time_s": statistics.median(self.step_times[1:] or self.step_times),
                "best": max(accuracy for _, accuracy, _ in self.curve),
                "target_step": reached[0] if reached else None, "target_s": reached[1] if reached else None,
                **self.extra}


def run_peer(args, train: Path, test: Path, names: list[str]) -> Record:
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments)

    from jrft_desktop.core.models import resolve_source

    source = resolve_source(args.model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    ids = {name: index for index, name in enumerate(names)}

    def encode(path: Path) -> list[dict]:
        frame = read(path)
        text, label = columns(frame)
        encoded = tokenizer(list(frame[text]), truncation=True, max_length=args.max_length)
        return [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
                 "labels": ids[str(value)]} for i, value in enumerate(frame[label])]

    train_rows, test_rows = encode(train), encode(test)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(names))
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                                             target_modules=["query", "value"]))
    collate = DataCollatorWithPadding(tokenizer)
    record = Record("peer")

    @torch.no_grad()
    def accuracy() -> float:
        model.eval()
        order = sorted(range(len(test_rows)), key=lambda i: len(test_rows[i]["input_ids"]))
        right = 0
        for start in range(0, len(order), 64):
            batch = collate([test_rows[i] for i in order[start:start + 64]])
            labels = batch.pop("labels")
            right += int((model(**batch).logits.argmax(-1) == labels).sum())
        model.train()
        return right / len(test_rows)

    class Timing(TrainerCallback):
        def on_train_begin(self, *_, **__):
            self.started, self.evaluating = time.perf_counter(), 0.0

        def on_step_begin(self, *_, **__):
            self.tick = time.perf_counter()

        def on_step_end(self, _, state, *__, **___):
            record.step_times.append(time.perf_counter() - self.tick)
            if state.global_step % args.eval_every == 0 or state.global_step == args.steps:
                tick = time.perf_counter()
                trained = tick - self.started - self.evaluating
                record.curve.append((state.global_step, accuracy(), trained))
                self.evaluating += time.perf_counter() - tick
                print(f"peer step {state.global_step}: accuracy {record.curve[-1][1]:.4f} after {trained:.1f} s",
                      file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as output:
        training = TrainingArguments(output_dir=output, max_steps=args.steps, per_device_train_batch_size=32,
                                     learning_rate=1e-3, seed=args.seed, save_strategy="no", eval_strategy="no",
                                     logging_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                                     dataloader_num_workers=0)
        Trainer(model=model, args=training, train_dataset=train_rows, data_collator=collate,
                callbacks=[Timing()]).train()
    return record


def run_jrft(args, name: str, train: Path, test: Path, overrides: dict) -> Record:
    from jrft_desktop.core.config import DataSpec, ModelSpec, RunConfig, TrainingSpec
    from jrft_desktop.core.events import EvalEvent, StepEvent
    from jrft_desktop.core.trainer import Trainer

    record = Record(name)
    trained = [0.0]

    def listen(event) -> None:
        if isinstance(event, StepEvent):
            record.step_times.append(event.step_time_s)
            trained[0] += event.step_time_s
        elif isinstance(event, EvalEvent):
            record.curve.append((event.step, event.metrics["accuracy"], trained[0]))
            print(f"{name} step {event.step}: accuracy {event.metrics['accuracy']:.4f} after {trained[0]:.1f} s",
                  file=sys.stderr, flush=True)

    config = RunConfig(model=ModelSpec(args.model),
                       data=DataSpec(train=str(train), validation=str(test), max_length=args.max_length),
                       training=TrainingSpec(max_steps=args.steps, batch_size=32, eval_every=args.eval_every,
                                             seed=args.seed, device="cpu", **overrides))
    with tempfile.TemporaryDirectory() as run_dir:
        finished = Trainer(config, Path(run_dir) / "run", [listen]).run()
    metrics = finished.metrics
    record.extra = {key: metrics.get(key) for key in ("method", "lr", "precision", "group_by_length", "padded_share",
                                                        "train_time_s", "eval_time_s")}
    return record


def table(summaries: list[dict], target: float) -> str:
    peer = next((s for s in summaries if s["system"] == "peer"), None)
    steps = sorted({step for s in summaries for step, _, _ in s["curve"]})
    lines = [f"| system | step s | steps to {100 * target:g} % | s to {100 * target:g} % | peer's ÷ this | best | "
             + " | ".join(f"@{step}" for step in steps) + " |", "|" + "---|" * (6 + len(steps))]
    for s in summaries:
        ratio = (peer["target_s"] / s["target_s"] if peer and peer["target_s"] and s["target_s"] else None)
        at = {step: accuracy for step, accuracy, _ in s["curve"]}
        lines.append(f"| {s['system']} | {s['step_time_s']:.3f} | {s['target_step'] or '–'} | "
                     + (f"{s['target_s']:.1f}" if s["target_s"] else "not reached") + " | "
                     + (f"{ratio:.2f}×" if ratio else "–") + f" | {100 * s['best']:.1f} | "
                     + " | ".join(f"{100 * at[step]:.1f}" if step in at else "–" for step in steps) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "sst2", help="A folder with train.tsv and test.tsv.")
    parser.add_argument("--model", default="bundled:all-MiniLM-L6-v2")
    parser.add_argument("--train-rows", type=int, default=12000)
    parser.add_argument("--eval-rows", type=int, default=None, help="A seeded sample of the test rows (default all).")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--target", type=float, default=0.80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--jrft-settings", type=json.loads, default={},
                        help='TrainingSpec values for `jrft` and `jrft-fp32` (JSON, e.g. \'{"lr": 0.1}\'): a '
                             'candidate default measured before it becomes one.')
    parser.add_argument("--out", type=Path, help="Write the summaries here (JSON).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        train, test, names = prepare(args, Path(folder))
        records = []
        for system in args.systems:
            if system == "peer":
                records.append(run_peer(args, train, test, names))
            else:
                overrides = {"jrft": args.jrft_settings, "jrft-fp32": {**args.jrft_settings, "precision": "fp32"},
                             "jrft-before": BEFORE}[system]
                records.append(run_jrft(args, system, train, test, overrides))
    summaries = [record.summary(args.target) for record in records]
    from jrft_desktop.core.precision import cpu_features

    machine = {"cpu_features": cpu_features(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    print(f"\n{args.data.name}: {args.train_rows:,} training rows, batch 32, length {args.max_length}, "
          f"{args.steps} steps; {machine}\n")
    print(table(summaries, args.target))
    for s in summaries:
        if "padded_share" in s:
            print(f"{s['system']}: {s['method']} lr {s['lr']:g}, {s['precision']}, padded share "
                  f"{100 * s['padded_share']:.1f} %, training {s['train_time_s']:.1f} s, evaluation "
                  f"{s['eval_time_s']:.1f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine,
                                        "systems": summaries}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
