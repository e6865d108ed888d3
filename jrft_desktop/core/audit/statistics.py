"""The audit's statistics from per-example scores, where a higher score means "more likely trained on" (the negative
loss, or a generated answer's mean log-likelihood).

- Membership inference (Yeom et al. 2018; Carlini et al., "Membership Inference Attacks From First Principles",
  2022): the ROC AUC of members against non-members, and the true-positive rate at a low false-positive rate.
- The one-run lower bound on ε (Steinke, Nasr, Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS
  2023): canaries included independently with probability ½; the auditor guesses "included" for the k highest
  scores and "excluded" for the k lowest. Under (ε, δ)-DP the number v of right guesses out of r satisfies
  P[V ≥ v] ≤ P[Binomial(r, q) ≥ v] + 2 m δ α, with q = e^ε / (1 + e^ε) and
  α = max over i = 1..v of P[v − i ≤ Binomial(r, q) < v] / i (their Theorem for approximate DP). The bound is the
  largest ε under which the observed v stays improbable (below β = 1 − confidence).
- Canary exposure (Carlini et al., "The Secret Sharer", 2019): log2 R − log2 rank of the true secret among the R
  possible ones.

numpy and scipy only: the formulas are the papers', the code this project's own."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special, stats

CONFIDENCE = 0.95  # of the one-run lower bound
LOW_FPR = 0.01  # the false-positive rate at which the attack's true-positive rate is reported
# The auditor's guess counts, as shares of the canaries guessed on (half "included", half "excluded"): a fixed grid
# chosen before any score is seen. Taking the best of them is paid for with a Bonferroni correction (each try at
# β / tries), so the best bound still holds at the stated confidence.
GUESS_SHARES = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
BISECTIONS = 60


def _scores(values, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"no {what} scores")
    if not np.isfinite(array).all():
        raise ValueError(f"the {what} scores are not all finite")
    return array


# --- membership inference ---------------------------------------------------------------------------------------
def roc_auc(members, non_members) -> float:
    """The chance that a random member scores above a random non-member, ties counting half (the Mann-Whitney U
    statistic over n1·n0): 0.5 is guessing, 1 a perfect attack."""
    inside, outside = _scores(members, "member"), _scores(non_members, "non-member")
    ranks = stats.rankdata(np.concatenate([inside, outside]))  # tied scores share their average rank
    u = ranks[:inside.size].sum() - inside.size * (inside.size + 1) / 2
    return float(u / (inside.size * outside.size))


def tpr_at_fpr(members, non_members, fpr: float = LOW_FPR) -> float:
    """The largest share of members that a threshold rule "score > t" flags while flagging at most `fpr` of the
    non-members."""
    inside, outside = _scores(members, "member"), _scores(non_members, "non-member")
    allowed = math.floor(fpr * outside.size + 1e-9)  # false positives tolerated
    if allowed >= outside.size:
        return 1.0
    threshold = np.sort(outside)[::-1][allowed]  # scores above it: at most `allowed` non-members
    return float(np.mean(inside > threshold))


# --- the one-run lower bound ------------------------------------------------------------------------------------
def one_run_p_value(canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """An upper bound on the chance of `correct` or more right guesses out of `guesses` (on `canaries` canaries)
    under (ε, δ)-DP."""
    if not 0 <= correct <= guesses <= canaries:
        raise ValueError(f"need 0 ≤ correct ≤ guesses ≤ canaries (got {correct}, {guesses}, {canaries})")
    q = special.expit(epsilon)  # the accuracy of ε-DP randomized response
    tail = float(stats.binom.sf(correct - 1, guesses, q))
    if correct == 0 or delta == 0:
        return min(1.0, tail)
    below = stats.binom.pmf(np.arange(correct - 1, -1, -1), guesses, q)  # P[Bin = v − 1], ..., P[Bin = 0]
    alpha = float(np.max(np.cumsum(below) / np.arange(1, correct + 1)))
    return min(1.0, tail + 2 * canaries * delta * alpha)


def epsilon_lower_bound(canaries: int, guesses: int, correct: int, delta: float,
                        confidence: float = CONFIDENCE) -> float:
    """The largest ε at which `correct` right guesses out of `guesses` would still be improbable (p-value below
    1 − confidence): with that confidence the true ε is at least this. 0 when ε = 0 explains the guesses."""
    beta = 1 - confidence

    def improbable(epsilon: float) -> bool:
        return one_run_p_value(canaries, guesses, correct, epsilon, delta) < beta

    if not improbable(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while improbable(high):  # ends: as ε grows, q → 1 and the tail → 1
        low, high = high, 2 * high
    for _ in range(BISECTIONS):  # improbable(low), not improbable(high)
        middle = (low + high) / 2
        low, high = (middle, high) if improbable(middle) else (low, middle)
    return low


@dataclass(frozen=True)
class OneRunAudit:
    epsilon_lower_bound: float
    canaries: int
    included: int
    guesses: int  # of the best try: r = k+ + k−
    correct: int  # v
    tries: int  # guess counts tried (the Bonferroni factor)
    delta: float
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


def one_run_audit(scores, included, delta: float, confidence: float = CONFIDENCE,
                  shares: tuple[float, ...] = GUESS_SHARES) -> OneRunAudit:
    """The one-run lower bound from the canaries' scores and which of them were trained on: for each guess count of
    the grid, "included" for the k highest scores and "excluded" for the k lowest; the best bound, each try at
    confidence 1 − β / tries."""
    values = _scores(scores, "canary")
    truth = np.asarray(included, dtype=bool).ravel()
    if truth.size != values.size:
        raise ValueError(f"{truth.size} inclusion flags for {values.size} canary scores")
    m = values.size
    counts = sorted({k for k in (round(share * m / 2) for share in shares) if 1 <= k <= m // 2})
    order = np.argsort(-values, kind="stable")  # highest first; ties keep the canaries' (random) order
    tried_at = 1 - (1 - confidence) / max(1, len(counts))
    best = OneRunAudit(0.0, m, int(truth.sum()), 0, 0, len(counts), delta, confidence)
    for k in counts:
        correct = int(truth[order[:k]].sum() + (~truth[order[m - k:]]).sum())
        bound = epsilon_lower_bound(m, 2 * k, correct, delta, tried_at)
        if bound >= best.epsilon_lower_bound:  # a tie goes to the try with more guesses
            best = OneRunAudit(bound, m, int(truth.sum()), 2 * k, correct, len(counts), delta, confidence)
    return best


# --- canary exposure --------------------------------------------------------------------------------------------
def exposure(secret_score: float, candidate_scores, space_bits: float) -> float:
    """log2 R − log2 rank of the true secret among all R = 2^space_bits possible secrets, its rank estimated from
    sampled candidate secrets: the share of the space scoring above it, read from a normal fitted to the candidates'
    scores (Carlini et al. fit a distribution likewise, to rank past what a sample can resolve). 0 to 1: not
    memorised; space_bits: the model ranks the true secret first.

    An estimate: with 32 candidates whose scores are normal, its median is the true exposure and 90 % of estimates
    fall between 0.75× and 1.45× of it at 3 to 8 bits (3.0 → 2.3–4.2, 8.0 → 5.9–11.6); on a trained tiny GPT-2 the fit
    stayed within 0.43 bits of the rank among 2,000 real candidates (0.02 to 4.4 bits; docs/privacy.md)."""
    candidates = _scores(candidate_scores, "candidate")
    spread = float(np.std(candidates, ddof=1)) if candidates.size > 1 else 0.0
    if spread > 0:
        share = float(stats.norm.sf(secret_score, loc=float(np.mean(candidates)), scale=spread))
    else:
        share = float(np.mean(candidates >= secret_score))
    return float(max(0.0, min(space_bits, -math.log2(2.0 ** -space_bits + share))))
