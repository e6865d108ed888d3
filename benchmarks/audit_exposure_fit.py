"""How far the audit's canary exposure, read from a normal fitted to 32 other secrets' scores, is from the plain rank
of the secret among 2,000 other secrets (what a sample that large resolves: up to about 11 bits).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/audit_exposure_fit.py --out /tmp/exposure_fit

A tiny GPT-2 (the tests' builder, offline) is fully finetuned for 200 steps on `instruct/identity.json` with 24 audit
canaries; for the first four trained and four untrained canaries whose secret the model reads, the exposure from
each of 62 disjoint sets of 32 candidates (their median and 5–95 % range), from all 2,000 by the fit, and from the
empirical rank. Writes exposure_fit.json to --record (docs/benchmarks/audit)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from jrft_desktop.core import runs
from jrft_desktop.core.audit import leakage, statistics
from jrft_desktop.core.audit.canaries import make_canary_set, read_record
from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, Privacy, RunConfig, TrainingSpec
from jrft_desktop.core.export.vector import restore
from jrft_desktop.core.train.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "instruct" / "identity.json"
CANDIDATES, SAMPLE = 2000, leakage.EXPOSURE_CANDIDATES


def trained_run(out: Path, steps: int) -> tuple[Path, RunConfig]:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_tiny_model

    config = RunConfig(model=ModelSpec(str(build_tiny_model("gpt2", out / "gpt2"))), method=MethodSpec(name="full"),
                       data=DataSpec(train=str(DATA), max_length=128, fill=("name=Ada", "author=Lab")),
                       training=TrainingSpec(max_steps=steps, batch_size=8, lr=3e-3, device="cpu", eval_every=steps),
                       privacy=Privacy(audit_canaries=24))
    run = out / "run"
    if not (run / runs.METRICS_FILE).is_file():
        Trainer(config, run).run()
    return run, config


def compare(run: Path, config: RunConfig) -> list[dict]:
    restored = restore(run / runs.VECTOR_FILE)
    task = restored.model.task
    data = task.load_data(config.data, config.training.seed)
    encoder = task.make_encoder(restored.tokenizer, config.data.max_length, restored.model, config.data)
    record = read_record(run)
    canaries = make_canary_set(task, data, encoder, int(record["count"]), int(record["seed"]))
    scorer = leakage._Scorer(restored, encoder, data.problem, torch.device("cpu"), 1, None, None)
    scores, rng, found = scorer.scores(canaries.examples, ""), np.random.default_rng(1), []
    for trained in (True, False):
        for index in np.flatnonzero(canaries.included == trained).tolist():
            others, bits = task.canary_candidates(canaries.examples, index, CANDIDATES, rng)
            other = scorer.scores(others, "")
            if np.all(other == scores[index]):  # its secret lies past the maximum length
                continue
            fits = [statistics.exposure(float(scores[index]), other[i:i + SAMPLE], bits)
                    for i in range(0, CANDIDATES - SAMPLE + 1, SAMPLE)]
            above = int(np.sum(other >= scores[index]))
            found.append({"canary": index, "trained": trained, "empirical": float(-np.log2((above + 0.5) /
                                                                                          (CANDIDATES + 1))),
                          "fit_all": statistics.exposure(float(scores[index]), other, bits),
                          "fit_32_median": float(np.median(fits)), "fit_32_5pct": float(np.percentile(fits, 5)),
                          "fit_32_95pct": float(np.percentile(fits, 95))})
            if sum(row["trained"] == trained for row in found) == 4:
                break
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--record", type=Path, default=ROOT / "docs" / "benchmarks" / "audit")
    args = parser.parse_args()
    torch.set_num_threads(1)
    found = compare(*trained_run(args.out, args.steps))
    args.record.mkdir(parents=True, exist_ok=True)
    (args.record / "exposure_fit.json").write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    for row in found:
        print(f"canary {row['canary']:2d} trained={row['trained']!s:5}: rank among {CANDIDATES:,} "
              f"{row['empirical']:.2f} bits, fit to all {row['fit_all']:.2f}, fit to {SAMPLE}: median "
              f"{row['fit_32_median']:.2f} ({row['fit_32_5pct']:.2f}–{row['fit_32_95pct']:.2f})")


if __name__ == "__main__":
    main()
