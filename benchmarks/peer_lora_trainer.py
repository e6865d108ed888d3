"""The app against what a user would pick instead: PEFT LoRA (rank 8 on query and value, lr 1e-3) trained by the
Hugging Face `Trainer`, and `jrft train` with its defaults, on the same rows, in the same process and run.

    python benchmarks/peer_lora_trainer.py --data ../shared/data/sst2 --target 0.80
    python benchmarks/peer_lora_trainer.py --data ../shared/data/agnews --eval-rows 1000 --target 0.85
    python benchmarks/peer_lora_trainer.py --data ../shared/data/rte --max-length 128 --target 0.55
    python benchmarks/peer_lora_trainer.py --data ../shared/data/cola --metric matthews --target 0.20

Both train on the same seeded sample of the training file (12,000 rows), batch 32, inputs up to 64 tokens, and are
scored every 50 steps on the same rows of the test file (all of them, or a seeded sample of --eval-rows; a folder
without `test.tsv`, as RTE and CoLA, is scored on its GLUE dev file `validation.tsv`), by --metric (accuracy, or
Matthews' correlation for CoLA). Sentence pairs (RTE's `sentence1` / `sentence2`) go to both systems as pairs. Timing
counts training only: each system's wall time since its training began, less the time its evaluations took.
Systems (--systems picks some):

- `peer`: `AutoModelForSequenceClassification` + `peft.get_peft_model(LoraConfig(task_type=SEQ_CLS, r=8,
  lora_alpha=16, lora_dropout=0.1, target_modules=[query, value]))` (PEFT's own sequence-classification example),
  `transformers.Trainer` with its defaults (AdamW, linear decay, no warmup, fp32 on a CPU, dynamic padding);
- `jrft`: `jrft train` defaults (the default method and settings: precision auto, batches grouped by length);
- `jrft-fp32`: the same with --precision fp32 (the same seed: bf16 against fp32 accuracy);
- `jrft-before`: the app before issue 20 (SLaSh lr 3e-2, 6 % warmup, linear decay, fp32, no length grouping);
- `jrft-lora`: the peer's method in the app (`jrft train --method lora --rank 8`: the same LoRA on query and value
  through peft, lr 1e-3), trained by the app's trainer (bf16, grouped batches): the trainer's share of the speed-up.

Prints per system the score curve, the median step time, the training time to --target, the best score and
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

from jrft_desktop.core import metrics

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BEFORE = {"lr": 3e-2, "warmup_ratio": 0.06, "schedule": "linear", "precision": "fp32", "group_by_length": False}
SYSTEMS = ("peer", "jrft", "jrft-fp32", "jrft-before", "jrft-lora")
# The peer's scores, by the app's own metric functions (the same formulas the jrft runs are scored with).
SCORES = {"accuracy": lambda labels, predictions, _: metrics.accuracy(labels, predictions),
          "matthews": metrics.matthews}


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False)


def columns(frame: pd.DataFrame) -> tuple[str, str | None]:
    """The text column and the second text of a pair (None for single sentences)."""
    if "sentence1" in frame.columns:
        return "sentence1", "sentence2"
    return next(name for name in frame.columns if name in ("sentence", "text")), None


def evaluation_file(folder: Path) -> Path:
    return folder / "test.tsv" if (folder / "test.tsv").is_file() else folder / "validation.tsv"


def prepare(args, folder: Path) -> tuple[Path, Path, list[str], dict]:
    """The sampled training rows and evaluation rows as TSV files both systems read; the label names in id order;
    how many rows each file holds."""
    train, test = read(args.data / "train.tsv"), read(evaluation_file(args.data))
    train = train.sample(n=min(args.train_rows, len(train)), random_state=args.seed)
    if args.eval_rows:
        test = test.sample(n=min(args.eval_rows, len(test)), random_state=args.seed)
    names = sorted({str(label) for label in train["label"]})
    paths = folder / "train.tsv", folder / "test.tsv"
    for frame, path in zip((train, test), paths):
        frame.to_csv(path, sep="\t", index=False)
    return *paths, names, {"train": len(train), "evaluation": len(test)}


class Record:
    """One system's curve: (step, score, training seconds so far) per evaluation, and its step times."""

    def __init__(self, name: str):
        self.name, self.curve, self.step_times, self.extra = name, [], [], {}

    def summary(self, target: float) -> dict:
        reached = next(((step, seconds) for step, score, seconds in self.curve if score >= target), None)
        return {"system": self.name, "curve": self.curve,
                "step_time_s": statistics.median(self.step_times[1:] or self.step_times),
                "best": max(score for _, score, _ in self.curve),
                "target_step": reached[0] if reached else None, "target_s": reached[1] if reached else None,
                **self.extra}


def run_peer(args, train: Path, test: Path, names: list[str]) -> Record:
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from jrft_desktop.core.models import resolve_source

    source = resolve_source(args.model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    ids = {name: index for index, name in enumerate(names)}

    def encode(path: Path) -> list[dict]:
        frame = read(path)
        text, pair = columns(frame)
        encoded = tokenizer(list(frame[text]), list(frame[pair]) if pair else None, truncation=True,
                            max_length=args.max_length)
        return [{key: encoded[key][i] for key in encoded} | {"labels": ids[str(value)]}
                for i, value in enumerate(frame["label"])]

    train_rows, test_rows = encode(train), encode(test)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(names))
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                                             target_modules=["query", "value"]))
    collate = DataCollatorWithPadding(tokenizer)
    record = Record("peer")

    @torch.no_grad()
    def score() -> float:
        model.eval()
        order = sorted(range(len(test_rows)), key=lambda i: len(test_rows[i]["input_ids"]))
        labels, predictions = [], []
        for start in range(0, len(order), 64):
            batch = collate([test_rows[i] for i in order[start:start + 64]])
            labels += batch.pop("labels").tolist()
            predictions += model(**batch).logits.argmax(-1).tolist()
        model.train()
        return SCORES[args.metric](labels, predictions, len(names))

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
                record.curve.append((state.global_step, score(), trained))
                self.evaluating += time.perf_counter() - tick
                print(f"peer step {state.global_step}: {args.metric} {record.curve[-1][1]:.4f} after {trained:.1f} s",
                      file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as output:
        training = TrainingArguments(output_dir=output, max_steps=args.steps, per_device_train_batch_size=32,
                                     learning_rate=1e-3, seed=args.seed, save_strategy="no", eval_strategy="no",
                                     logging_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                                     dataloader_num_workers=0)
        Trainer(model=model, args=training, train_dataset=train_rows, data_collator=collate,
                callbacks=[Timing()]).train()
    return record


def run_jrft(args, name: str, train: Path, test: Path, overrides: dict, method: dict) -> Record:
    from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, RunConfig, TrainingSpec
    from jrft_desktop.core.events import EvalEvent, StepEvent
    from jrft_desktop.core.train.loop import Trainer

    record = Record(name)
    trained = [0.0]

    def listen(event) -> None:
        if isinstance(event, StepEvent):
            record.step_times.append(event.step_time_s)
            trained[0] += event.step_time_s
        elif isinstance(event, EvalEvent):
            record.curve.append((event.step, event.metrics[args.metric], trained[0]))
            print(f"{name} step {event.step}: {args.metric} {event.metrics[args.metric]:.4f} after {trained[0]:.1f} s",
                  file=sys.stderr, flush=True)

    config = RunConfig(model=ModelSpec(args.model), method=MethodSpec(**method),
                       data=DataSpec(train=str(train), validation=str(test), max_length=args.max_length),
                       # overrides may replace the steps and evaluations too: '{"max_steps": null, "eval_every": null}'
                       # is a default run, trained until it converges
                       training=TrainingSpec(**{"max_steps": args.steps, "batch_size": 32,
                                                "eval_every": args.eval_every, "seed": args.seed, "device": "cpu",
                                                "metric": args.metric, **overrides}))
    with tempfile.TemporaryDirectory() as run_dir:
        finished = Trainer(config, Path(run_dir) / "run", [listen]).run()
    metrics = finished.metrics
    record.extra = {key: metrics.get(key) for key in ("method", "lr", "precision", "group_by_length", "padded_share",
                                                        "train_time_s", "eval_time_s")}
    return record


def table(summaries: list[dict], target: float) -> str:
    peer = next((s for s in summaries if s["system"] == "peer"), None)
    steps = sorted({step for s in summaries for step, _, _ in s["curve"]})
    lines = [f"| system | step s | steps to {100 * target:g} | s to {100 * target:g} | peer's ÷ this | best | "
             + " | ".join(f"@{step}" for step in steps) + " |", "|" + "---|" * (6 + len(steps))]
    for s in summaries:
        ratio = (peer["target_s"] / s["target_s"] if peer and peer["target_s"] and s["target_s"] else None)
        at = {step: score for step, score, _ in s["curve"]}
        lines.append(f"| {s['system']} | {s['step_time_s']:.3f} | {s['target_step'] or '–'} | "
                     + (f"{s['target_s']:.1f}" if s["target_s"] else "not reached") + " | "
                     + (f"{ratio:.2f}×" if ratio else "–") + f" | {100 * s['best']:.1f} | "
                     + " | ".join(f"{100 * at[step]:.1f}" if step in at else "–" for step in steps) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "sst2",
                        help="A folder with train.tsv and test.tsv (or validation.tsv, the GLUE dev file).")
    parser.add_argument("--model", default="bundled:all-MiniLM-L6-v2")
    parser.add_argument("--train-rows", type=int, default=12000)
    parser.add_argument("--eval-rows", type=int, default=None, help="A seeded sample of the test rows (default all).")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--target", type=float, default=0.80, help="The score whose time to reach is compared.")
    parser.add_argument("--metric", choices=list(SCORES), default="accuracy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--jrft-settings", type=json.loads, default={},
                        help='TrainingSpec values for `jrft` and `jrft-fp32` (JSON, e.g. \'{"lr": 0.1}\'): a '
                             'candidate default measured before it becomes one; \'{"max_steps": null, "eval_every": '
                             'null}\': the default run, until it converges.')
    parser.add_argument("--out", type=Path, help="Write the summaries here (JSON).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        train, test, names, rows = prepare(args, Path(folder))
        records = []
        for system in args.systems:
            if system == "peer":
                records.append(run_peer(args, train, test, names))
            else:
                # (TrainingSpec overrides, MethodSpec values) of each jrft system
                overrides, method = {"jrft": (args.jrft_settings, {}),
                                     "jrft-fp32": ({**args.jrft_settings, "precision": "fp32"}, {}),
                                     "jrft-before": (BEFORE, {}),
                                     "jrft-lora": ({}, {"name": "lora", "rank": 8})}[system]
                records.append(run_jrft(args, system, train, test, overrides, method))
    summaries = [record.summary(args.target) for record in records]
    from jrft_desktop.core.train.precision import cpu_features

    machine = {"cpu_features": cpu_features(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    print(f"\n{args.data.name}: {rows['train']:,} training rows, {rows['evaluation']:,} evaluation rows "
          f"({evaluation_file(args.data).name}), batch 32, length {args.max_length}, "
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
                                        "rows": rows, "systems": summaries}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
