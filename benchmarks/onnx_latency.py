"""CPU latency of a run's ONNX export under onnxruntime against its torch merged model, at batch 1 and 32.

Each run is exported twice (`jrft export RUN --merged` picks the torch form that fits its pooling: the stock
transformers classifier for cls, a sentence-transformers folder for mean; and `--onnx`), both folders are loaded
with their stock libraries (a mask-pooled run, which only ONNX holds, is timed against the merged model in torch), and the same tokenised SST-2 dev batches go through each, interleaved round by round
(so a load change on this shared machine touches both alike). The outputs are compared too.

    flock /tmp/jrft-heavy.lock .venv/bin/python benchmarks/onnx_latency.py RUN_DIR [RUN_DIR ...] --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from jrft_desktop.core.export import merged_copy, restore
from jrft_desktop.core.export.forms import choose, get_form
from jrft_desktop.core.paths import sample_data_dir

BATCHES = (1, 32)


def _torch_runner(folder: Path, form: str, restored):
    """A callable (tokenised batch -> logits) over the folder loaded by the stock library of its form; for a run
    that only ONNX can hold (mask pooling), the merged model in torch as the exporter traced it."""
    if form == "onnx":
        model, _ = merged_copy(restored.model, restored.method)
        return lambda batch: model(**batch)
    if form == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(folder), device="cpu").eval()
        return lambda batch: model(dict(batch))["sentence_embedding"]
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    return lambda batch: model(**batch).logits


def _onnx_runner(folder: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]
    return lambda batch: session.run(["logits"], {name: batch[name].numpy() for name in names})[0]


def _size_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def measure(run: Path, texts: list[str], rounds: int, threads: int, work: Path) -> list[dict]:
    restored = restore(run / "vector.safetensors")
    form, _ = choose(restored.model, restored.method)
    folders = {}
    for name in dict.fromkeys((form.name, "onnx")):
        folders[name] = get_form(name).write(restored.model, restored.method, restored.tokenizer,
                                             restored.metadata, work / f"{run.name}-{name}")
    runners = {"torch": _torch_runner(folders[form.name], form.name, restored),
               "onnx": _onnx_runner(folders["onnx"], threads)}
    rows = []
    for size in BATCHES:
        rows_of_text, _ = restored.encoder.encode(texts[:size])
        batch = restored.encoder.collate(rows_of_text)
        seconds = {name: [] for name in runners}
        with torch.no_grad():
            outputs = {name: np.asarray(runner(batch)) for name, runner in runners.items()}  # and a warm-up
            for _ in range(rounds):
                for name, runner in runners.items():
                    started = time.perf_counter()
                    runner(batch)
                    seconds[name].append(time.perf_counter() - started)
        torch_ms, onnx_ms = (1000 * statistics.median(seconds[name]) for name in ("torch", "onnx"))
        torch_form = form.name if form.name != "onnx" else "merged JrftModel"
        rows.append({"run": run.name, "pooling": restored.model.pooling, "torch form": torch_form, "batch": size,
                     "torch ms": torch_ms, "onnx ms": onnx_ms, "onnx / torch": onnx_ms / torch_ms,
                     "max |difference|": float(np.abs(outputs["torch"] - outputs["onnx"]).max()),
                     "torch MB": _size_mb(folders[form.name]) if form.name != "onnx" else float("nan"),
                     "onnx MB": _size_mb(folders["onnx"])})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="Finished run folders.")
    parser.add_argument("--rounds", type=int, default=30, help="Timed calls per batch size and runtime.")
    parser.add_argument("--threads", type=int, default=2, help="Intra-op threads for torch and onnxruntime alike.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = (sample_data_dir() / "sst2_dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.split("\t")[0] for line in lines[:max(BATCHES)]]
    columns = ("run", "pooling", "torch form", "batch", "torch ms", "onnx ms", "onnx / torch", "max |difference|",
               "torch MB", "onnx MB")
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    with tempfile.TemporaryDirectory() as work:
        for run in args.runs:
            for row in measure(run, texts, args.rounds, args.threads, Path(work)):
                cells = [f"{value:.3g}" if isinstance(value, float) else str(value) for value in row.values()]
                print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\n{args.threads} intra-op threads, median of {args.rounds} calls, torch {torch.__version__}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
