"""Instruction tuning the bundled SmolLM2-135M-Instruct (issue 18's report), with `jrft train` as a user runs it.

1. Identity: ../shared/data/instruct/identity.json with its placeholders filled ({{name}} = Juniper, {{author}} =
   JRFT Labs); 10 questions held out (seeded), the other 81 trained on for --identity-steps steps by slash, lora and
   full; then each held-out question is answered greedily (`jrft predict`) and an answer counts when it names
   Juniper. The base model is asked too.
2. Alpaca: ../shared/data/instruct/alpaca_en_demo.json, 10% held out (seeded); perplexity of the held-out answers
   (`jrft eval`) before training (the base model, scored through the core) and after --alpaca-steps of slash and
   lora.

Each run records its trainable parameters, median step time and peak memory (its own process). Results are appended
to a JSON-lines file (resumable: finished runs are skipped) and printed as a markdown table.

    python benchmarks/instruct_smollm2.py --out /tmp/instruct-bench
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "instruct"
MODEL = "bundled:SmolLM2-135M-Instruct"
NAME, AUTHOR = "Juniper", "JRFT Labs"
JRFT = [sys.executable, "-m", "jrft_desktop.cli"]


def split(source: Path, held: float, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    rows = json.loads(source.read_text(encoding="utf-8"))
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    count = held if isinstance(held, int) else round(held * len(rows))
    test = sorted(order[:count])
    train_path, test_path = folder / f"{source.stem}-train.json", folder / f"{source.stem}-test.json"
    train_path.write_text(json.dumps([rows[i] for i in range(len(rows)) if i not in set(test)]), encoding="utf-8")
    test_path.write_text(json.dumps([rows[i] for i in test]), encoding="utf-8")
    return train_path, test_path


def train(run_dir: Path, data: Path, method: str, steps: int, max_length: int, extra: list[str]) -> dict:
    command = [*JRFT, "train", "--model", MODEL, "--data", str(data), "--method", method, "--max-steps", str(steps),
               "--batch-size", "8", "--max-length", str(max_length), "--eval-every", str(steps),
               "--output", str(run_dir), *extra]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {"trainable_params": metrics["trainable_params"], "step_time_s": metrics["step_time_s"],
            "peak_memory_mb": metrics["peak_memory_mb"], "train_time_s": metrics["train_time_s"],
            "wall_s": time.perf_counter() - started, "precision": metrics.get("precision")}


def answers(run_or_vector: Path, prompts: Path) -> list[str]:
    done = subprocess.run([*JRFT, "predict", str(run_or_vector), "--data", str(prompts), "--max-new-tokens", "48"],
                          check=True, cwd=ROOT, capture_output=True, text=True)
    return [json.loads(line)["generated"] for line in done.stdout.strip().splitlines()]


def base_answers_and_perplexity(prompts: Path, scored: Path, max_length: int) -> tuple[list[str], float]:
    """The base model's answers to `prompts` and its perplexity on `scored`'s answers, through the core (no method
    applied)."""
    sys.path.insert(0, str(ROOT))
    import torch

    from jrft_desktop.core.config import DataSpec, Decoding, ModelSpec
    from jrft_desktop.core.models import JrftModel, load_backbone
    from jrft_desktop.core.tasks import get_task
    from jrft_desktop.core.tasks.generate import answer, load_recorded

    task = get_task("generate")
    loaded = load_backbone(ModelSpec(name_or_path=MODEL), task)
    model = JrftModel(loaded, "auto", 1, task)
    encoder = task.make_encoder(loaded.tokenizer, max_length, model, DataSpec())
    device = torch.device("cpu")
    fill = {"name": NAME, "author": AUTHOR}
    asked = load_recorded(str(prompts), {"columns": {"fill": fill}}, with_answers=False)
    said = [answer(model, encoder, turns, Decoding(max_new_tokens=48), device) for turns in asked.conversations]
    examples = task.load_examples(str(scored), {"columns": {"text": "instruction", "fill": fill}})
    rows, _ = encoder.encode(examples)
    from jrft_desktop.core.train.distributed import Processes

    scores = task.score_rows(model, encoder, rows, device, Processes(), "fp32")
    return said, scores["perplexity"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/instruct-bench"))
    parser.add_argument("--identity-steps", type=int, default=60)
    parser.add_argument("--alpaca-steps", type=int, default=60)
    parser.add_argument("--methods", nargs="+", default=["slash", "lora", "full"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.jsonl"
    done = {json.loads(line)["case"]: json.loads(line) for line in results_path.read_text().splitlines()} \
        if results_path.exists() else {}

    def record(case: str, row: dict) -> None:
        row = {"case": case, **row}
        done[case] = row
        with results_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    fill = ["--fill", f"name={NAME}", "--fill", f"author={AUTHOR}"]
    identity_train, identity_test = split(DATA / "identity.json", 10, args.out)
    alpaca_train, alpaca_test = split(DATA / "alpaca_en_demo.json", 0.1, args.out)
    if "base" not in done:
        said, perplexity = base_answers_and_perplexity(identity_test, alpaca_test, 256)
        record("base", {"named": sum(NAME in text for text in said), "answers": said,
                        "alpaca_perplexity": perplexity})
    for method in args.methods:
        case = f"identity-{method}"
        if case not in done:
            run = args.out / case
            stats = train(run, identity_train, method, args.identity_steps, 128, fill)
            said = answers(run, identity_test)
            record(case, {**stats, "steps": args.identity_steps, "named": sum(NAME in text for text in said),
                          "answers": said})
    for method in [m for m in args.methods if m != "full"]:
        case = f"alpaca-{method}"
        if case not in done:
            run = args.out / case
            stats = train(run, alpaca_train, method, args.alpaca_steps, 256, [])
            scored = subprocess.run([*JRFT, "eval", str(run), "--data", str(alpaca_test)], check=True, cwd=ROOT,
                                    capture_output=True, text=True)
            record(case, {**stats, "steps": args.alpaca_steps,
                          "alpaca_perplexity": json.loads(scored.stdout)["perplexity"]})
    print("\n| case | trainable params | steps | step (s) | peak memory (MB) | named (of 10) | alpaca perplexity |")
    print("|---|---|---|---|---|---|---|")
    for case, row in done.items():
        print(f"| {case} | {row.get('trainable_params', '-')} | {row.get('steps', '-')} | "
              f"{row.get('step_time_s', float('nan')):.2f} | {row.get('peak_memory_mb', float('nan')):.0f} | "
              f"{row.get('named', '-')} | {row.get('alpaca_perplexity', '-')} |")


if __name__ == "__main__":
    main()
