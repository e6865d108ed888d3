"""The privacy report of a private run (privacy_report.md in its run folder and beside every merged export), made
from the privacy fields the run recorded. Torch-free: the exporters and the app write and read it too."""

from __future__ import annotations

import math
from pathlib import Path

from .paths import atomic_write_text

REPORT_NAME = "privacy_report.md"


def privacy_report(privacy: dict, title: str = "") -> str:
    """A Markdown report of a private run, from its recorded privacy fields."""
    target = privacy.get("epsilon_target")
    accountants = {"prv": "PRV (privacy random variables, Gopi et al. 2021); ε is an upper bound within "
                          f"{privacy['epsilon_error']:g} of the estimate",
                   "rdp": "RDP (Rényi differential privacy, whole orders 2 to 256)"}
    rows = [
        ("ε spent", f"{privacy['epsilon_spent']:.4g}"),
        ("ε target", f"{target:g}" if target is not None else "none (the noise multiplier was given)"),
        ("δ", f"{privacy['delta']:.3g} ({privacy['delta_source']})"),
        ("Noise multiplier σ", f"{privacy['noise_multiplier']:.4g} ({privacy['noise_source']})"),
        ("Clipping norm C", f"{privacy['max_grad_norm']:g}"),
        ("Sampling", f"Poisson, rate q = {privacy['sample_rate']:.4g} (expected logical batch "
                     f"{privacy['expected_batch_size']} of {privacy['train_examples']} training examples)"),
        ("Steps", f"{privacy['steps']} of {privacy['planned_steps']} planned"),
        ("Accountant", accountants.get(privacy["accountant"], privacy["accountant"])),
        ("Opacus", privacy["opacus_version"]),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    heading = f"# Privacy report{': ' + title if title else ''}"
    return f"""{heading}

This model was trained with differentially private SGD (DP-SGD, through Opacus): it is
**({privacy['epsilon_spent']:.3g}, {privacy['delta']:.3g})-differentially private** with respect to each training
example: for any outcome, its probability with a given example in the training data is at most
e^ε = {math.exp(min(privacy['epsilon_spent'], 700)):.3g} times its probability without that example, plus δ.

| Setting | Value |
| --- | --- |
{table}

## How it was achieved
- Every step drew each training example independently with probability q (Poisson sampling), from the operating
  system's randomness, not from the run's recorded seed.
- Each example's gradient was computed on its own and scaled down to a norm of at most C; Gaussian noise of
  standard deviation σ·C was added to their sum once per step.
- Validation data is used only to score checkpoints; it is not covered by the guarantee, and scoring it spends
  no privacy budget.

## What is not covered
- The training loss shown while training and kept in the run's history.json is computed on the private batches
  without noise: do not share it.
- Only the training examples are protected: the base model, the validation data and the settings are public.
- The noise uses torch's standard generator (Opacus' secure mode against floating-point attacks is off).
"""


def write_report(folder: Path, privacy: dict, title: str = "") -> Path:
    return atomic_write_text(Path(folder) / REPORT_NAME, privacy_report(privacy, title))
