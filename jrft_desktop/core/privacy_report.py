"""The privacy report of a run (privacy_report.md in its run folder and beside every merged export), made from the
privacy fields a private run recorded and, once the run was audited, the audit's findings (core/audit). Torch-free:
the exporters and the app write and read it too."""

from __future__ import annotations

import math
from pathlib import Path

from .paths import atomic_write_text

REPORT_NAME = "privacy_report.md"


def privacy_report(privacy: dict | None, title: str = "", audit: dict | None = None) -> str:
    """A Markdown report of a run: its privacy guarantee (`privacy`, the fields a private run recorded; None: a run
    trained without one), and the audit's findings when it was audited (audit.json)."""
    heading = f"# Privacy report{': ' + title if title else ''}"
    body = _guarantee(privacy) if privacy is not None else NOT_PRIVATE
    return f"{heading}\n\n{body}" + (f"\n{audit_section(audit)}" if audit is not None else "")


NOT_PRIVATE = """This model was trained without differential privacy: no guarantee bounds what it reveals about its
training examples. The audit below measures what it does reveal, to an attacker who can query the model.
"""


def _guarantee(privacy: dict) -> str:
    """The guarantee of a private run and how it was achieved, from its recorded privacy fields."""
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
                     f"{privacy['expected_batch_size']} of {privacy['train_examples']} "
                     f"{'units' if privacy.get('privacy_unit') else 'training examples'})"),
        *([("Privacy unit", f"column '{privacy['privacy_unit']}': {privacy['units']:,} units over {privacy['rows']:,} "
                            f"rows, at most {privacy['max_rows_per_unit']} rows of a unit per step "
                            f"({privacy['capped_units']:,} units capped)")] if privacy.get("privacy_unit") else []),
        ("Steps", f"{privacy['steps']} of {privacy['planned_steps']} planned"),
        ("Accountant", accountants.get(privacy["accountant"], privacy["accountant"])),
        ("Opacus", privacy["opacus_version"]),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    unit = (f"value of the column '{privacy['privacy_unit']}' (all its rows together)" if privacy.get("privacy_unit")
            else "training example")
    return f"""This model was trained with differentially private SGD (DP-SGD, through Opacus): it is
**({privacy['epsilon_spent']:.3g}, {privacy['delta']:.3g})-differentially private** with respect to each {unit}:
for any outcome, its probability with a given {unit} in the training data is at most
e^ε = {math.exp(min(privacy['epsilon_spent'], 700)):.3g} times its probability without that {unit}, plus δ.

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


def write_report(folder: Path, privacy: dict | None, title: str = "", audit: dict | None = None) -> Path:
    return atomic_write_text(Path(folder) / REPORT_NAME, privacy_report(privacy, title, audit))


# --- the audit (core/audit) ------------------------------------------------------------------------------------
def audit_reading(audit: dict) -> str:
    """The audit's findings in plain words, one paragraph (the CLI, the report and the Results page show it)."""
    auc, tpr = audit["mia_auc"], audit["mia_tpr_at_1pct_fpr"]
    parts = [f"Shown one of the run's training examples and one held-out example, an attacker who guesses from the "
             f"model's loss picks the training example {100 * auc:.0f} % of the time; 50 % is guessing. Allowed to "
             f"wrongly accuse at most 1 % of held-out examples, it finds {100 * tpr:.1f} % of the training examples "
             "(1 % is guessing)."
             + _by_unit(audit["membership"])[0]]
    epsilon, bound = audit.get("epsilon"), audit.get("epsilon_lower_bound")
    if bound is not None:
        canaries = audit["one_run"]["canaries"]
        above = (f"the accountant guarantees at most {epsilon:.2f}." if epsilon is not None
                 else "without DP no guarantee bounds it from above.")
        parts.append(f"From its {canaries:,} canaries the audit shows, with 95 % confidence, that the run's ε is at "
                     f"least {bound:.2f}; {above}" if bound > 0 else
                     f"Its {canaries:,} canaries give no evidence that the run's ε is above 0 (a lower bound of 0 at "
                     f"95 % confidence); {above}")
        if epsilon is not None and bound > epsilon:
            parts.append("That is above the guarantee: private training did not do what it promised; please report "
                         "this as a bug.")
    exposure = audit.get("canary_exposure")
    if exposure is not None and exposure["mean"] is not None:
        parts.append(f"The secrets of the trained canaries have an exposure of {exposure['mean']:.1f} bits on average "
                     f"(at most {exposure['max']:.1f}) of {exposure['bits']:.1f}: 0 to 1 means the model did not "
                     f"memorise them, {exposure['bits']:.0f} that it recites them.")
    if exposure is not None and exposure.get("cut_off"):
        parts.append(f"{exposure['cut_off']} canaries' secrets lie past the run's maximum length, where the model "
                     "never reads them; their exposure is not measured.")
    if epsilon is not None:
        parts.append(f"The run was trained with DP-SGD at ε = {epsilon:.2f}, which bounds any attack's advantage.")
    return " ".join(parts)


def _by_unit(membership: dict) -> tuple[str, str]:
    """(the reading's sentence, the report's words) on a per-unit attack; empty for one by row."""
    if "privacy_unit" not in membership:
        return "", ""
    unit, both = membership["privacy_unit"], membership.get("units_on_both_sides")
    if both is None:  # the held-out rows name no unit
        return (f" Each training example is one row of a different '{unit}'; the held-out rows do not say whose they "
                "are, so the run may have trained on their writers' other rows, and the attack then understates.",
                f", one row of each '{unit}'; the held-out rows do not name their unit, each counts as one")
    return (f" Each training example is one row of a different '{unit}', each held-out one of a '{unit}' the run "
            "never trained on.", f", one row of each '{unit}' ({both:,} units with rows on both sides left out)")


def audit_section(audit: dict) -> str:
    """The audit's findings as a section of the report."""
    rows = [("Membership inference AUC (loss attack)", f"{audit['mia_auc']:.4f}"),
            ("True-positive rate at 1 % false positives", f"{audit['mia_tpr_at_1pct_fpr']:.4f}"),
            ("Examples scored", f"{audit['membership']['members']:,} training against "
                                f"{audit['membership']['non_members']:,} held-out"
                                + _by_unit(audit["membership"])[1])]
    if audit.get("epsilon_lower_bound") is not None:
        one_run = audit["one_run"]
        rows.append(("ε lower bound (one run, 95 % confidence)",
                     f"{audit['epsilon_lower_bound']:.3f} (δ = {one_run['delta']:.3g}; {one_run['correct']} of "
                     f"{one_run['guesses']} guesses right on {one_run['canaries']:,} canaries, "
                     f"{one_run['included']:,} of them trained)"))
    if audit.get("canary_exposure") is not None and audit["canary_exposure"]["mean"] is not None:
        exposure = audit["canary_exposure"]
        rows.append(("Canary exposure", f"mean {exposure['mean']:.2f}, max {exposure['max']:.2f} bits of "
                                        f"{exposure['bits']:.2f} ({exposure['canaries']} trained canaries)"))
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"""
## Audit: what the trained model gives away
{audit['reading']}

| Measure | Value |
| --- | --- |
{table}

Membership inference compares the model's loss on training examples with its loss on as many held-out ones (Yeom et
al. 2018; Carlini et al. 2022). The ε lower bound guesses which canaries were trained on from the same scores
(Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run", 2023): it is evidence from this one run,
a floor under the true ε, never a guarantee; a bound above the accountant's ε would mean a bug.
"""
