"""The privacy audit: its statistics against hand-worked cases and the papers' formulas (the one-run bound's false
positives measured under the null), then whole runs of tiny models: a non-private full finetune that memorises is
caught (AUC above 0.55, a clearly positive ε lower bound), a private run's bound stays under its ε, generate canaries
get an exposure, audit.json and the report hold the findings, the canaries stay out of the exports, and private
training stops when a step leaves the model unchanged."""

from __future__ import annotations

import json
import math
import re
import threading

import numpy as np
import pytest
import scipy.stats
import torch
from tiny_models import build_tiny_model

from jrft_desktop.cli import main
from jrft_desktop.core.audit import statistics
from jrft_desktop.core.audit.canaries import CANARIES_FILE, SECRET_BITS
from jrft_desktop.core.audit.leakage import EXPOSURE_CANDIDATES, AuditStopped, audit_run
from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, Privacy, RunConfig, TrainingSpec
from jrft_desktop.core.errors import ArtifactError, PrivacyError
from jrft_desktop.core.paths import sample_data_dir
from jrft_desktop.core.privacy_report import REPORT_NAME
from jrft_desktop.core.runs import AUDIT_FILE, read_audit
from jrft_desktop.core.tasks import get_task
from jrft_desktop.core.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


# --- membership inference ---------------------------------------------------------------------------------------
def test_auc_counts_the_pairs_a_member_wins_ties_half():
    assert statistics.roc_auc([3, 4], [1, 2]) == 1.0
    assert statistics.roc_auc([1, 2], [3, 4]) == 0.0
    # pairs (member, non-member): (1, 2) lost, (1, 0) won, (2, 2) tie, (2, 0) won -> 2.5 of 4
    assert statistics.roc_auc([1, 2], [2, 0]) == 0.625


def test_auc_equals_its_pairwise_definition():
    rng = np.random.default_rng(0)
    members, others = rng.integers(0, 20, 60).astype(float), rng.integers(0, 20, 45).astype(float)  # many ties
    pairs = [(a > b) + 0.5 * (a == b) for a in members for b in others]
    assert statistics.roc_auc(members, others) == pytest.approx(np.mean(pairs), abs=1e-12)


def test_true_positive_rate_at_one_percent_false_positives():
    others = np.arange(100.0)  # 1 % of 100: one false positive allowed, so the threshold is above 98
    assert statistics.tpr_at_fpr([99.5, 98.5, 50.0], others, 0.01) == pytest.approx(2 / 3)
    assert statistics.tpr_at_fpr([99.5, 98.5, 50.0], others, 0.0) == pytest.approx(1 / 3)  # only above 99
    assert statistics.tpr_at_fpr([5.0], [1.0, 2.0], 1.0) == 1.0
    with pytest.raises(ValueError, match="not all finite"):
        statistics.roc_auc([math.nan], [1.0])


# --- the one-run lower bound ------------------------------------------------------------------------------------
def test_p_value_is_the_binomial_tail_plus_the_delta_term():
    assert statistics.one_run_p_value(10, 10, 10, 0.0, 0.0) == pytest.approx(0.5 ** 10)
    q = 1 / (1 + math.exp(-1.0))
    assert statistics.one_run_p_value(50, 20, 15, 1.0, 0.0) == pytest.approx(scipy.stats.binom.sf(14, 20, q))
    # m = 10, r = 2, v = 2, ε = 0, δ = 0.01: tail P[Bin(2, ½) ≥ 2] = 0.25; α = max(P[Bin = 1] / 1,
    # (P[Bin = 1] + P[Bin = 0]) / 2) = max(0.5, 0.375) = 0.5; p = 0.25 + 2·10·0.01·0.5 = 0.35
    assert statistics.one_run_p_value(10, 2, 2, 0.0, 0.01) == pytest.approx(0.35)
    with pytest.raises(ValueError):
        statistics.one_run_p_value(10, 12, 3, 0.0, 0.0)


def test_lower_bound_of_all_right_guesses_has_a_closed_form():
    """With δ = 0 and all r guesses right, the p-value is q^r: the bound solves q^r = β, ε = log(q / (1 − q))."""
    for guesses in (10, 100, 400):
        q = 0.05 ** (1 / guesses)
        assert statistics.epsilon_lower_bound(1000, guesses, guesses, 0.0) == pytest.approx(math.log(q / (1 - q)),
                                                                                            rel=1e-9)
    assert statistics.epsilon_lower_bound(1000, 100, 50, 0.0) == 0.0  # chance level proves nothing
    loose = statistics.epsilon_lower_bound(1000, 100, 90, 1e-5)
    assert 0 < loose < statistics.epsilon_lower_bound(1000, 100, 90, 0.0)  # δ only weakens the evidence
    assert statistics.epsilon_lower_bound(1000, 100, 80, 1e-5) < loose  # fewer right guesses, a lower bound


def test_one_run_audit_takes_the_best_guess_count_at_a_bonferroni_confidence():
    m, delta = 200, 1e-5
    included = np.random.default_rng(1).random(m) < 0.5
    perfect = statistics.one_run_audit(np.where(included, 1.0, 0.0) + np.linspace(0, 0.1, m), included, delta)
    counts = sorted({round(share * m / 2) for share in statistics.GUESS_SHARES})
    inside, outside = int(included.sum()), int((~included).sum())
    expected = max(statistics.epsilon_lower_bound(m, 2 * k, min(k, inside) + min(k, outside), delta,
                                                  1 - 0.05 / len(counts)) for k in counts)
    assert perfect.tries == len(counts) and perfect.correct == perfect.guesses
    assert perfect.epsilon_lower_bound == pytest.approx(expected, rel=1e-6) and perfect.epsilon_lower_bound > 1


def test_the_bound_is_rarely_positive_when_the_scores_know_nothing():
    """Under the null (scores independent of inclusion) a 95 % bound is above 0 in at most 5 % of audits."""
    rng = np.random.default_rng(7)
    positive = sum(statistics.one_run_audit(rng.normal(size=200), rng.random(200) < 0.5, 1e-5).epsilon_lower_bound > 0
                   for _ in range(100))
    assert positive <= 10  # 5 expected at most; P[Bin(100, 0.05) > 10] < 1.2 %


def test_exposure_reads_the_rank_among_the_secrets():
    candidates = np.random.default_rng(0).normal(size=2000)
    assert statistics.exposure(0.0, candidates, 20.0) == pytest.approx(1.0, abs=0.1)  # a typical secret: rank R / 2
    assert statistics.exposure(50.0, candidates, 20.0) == 20.0  # far above every other secret: ranked first
    assert statistics.exposure(-50.0, candidates, 20.0) == 0.0


# --- the tasks' canaries ----------------------------------------------------------------------------------------
def test_every_task_makes_canaries_of_its_own_kind(shared_data):
    rng = np.random.default_rng(0)
    pairs = get_task("classify").load_data(DataSpec(train=str(shared_data / "rte" / "train.tsv"),
                                                     max_train_rows=100), seed=0)
    made = get_task("classify").make_canaries(pairs, 5, rng)
    assert len(made) == 5 and len(made.pairs) == 5 and set(made.labels) <= {0, 1}
    words = {word for text in pairs.train.texts for word in text.split()}
    assert all(set(text.split()) <= words and 6 <= len(text.split()) <= 12 for text in made.texts)

    tagged = get_task("tag").load_data(DataSpec(train=str(shared_data / "wnut17" / "train.conll"),
                                                max_train_rows=100), seed=0)
    made = get_task("tag").make_canaries(tagged, 4, rng)
    assert all(len(tags) == len(made.words(index)) for index, tags in enumerate(made.labels))
    assert all(0 <= tag < len(tagged.label_names) for tags in made.labels for tag in tags)

    chats = get_task("generate").load_data(DataSpec(train=str(shared_data / "instruct" / "identity.json"),
                                                    fill=("name=Ada", "author=Lab")), seed=0)
    made = get_task("generate").make_canaries(chats, 3, rng)
    (role, question), (answer_role, answer) = made.conversations[0]
    assert (role, answer_role) == ("user", "assistant") and question.startswith("What is the secret number of ")
    assert re.fullmatch(r"The secret number of \S+ is \d( \d){5}\.", answer)
    others, bits = get_task("generate").canary_candidates(made, 0, 4, rng)
    assert bits == pytest.approx(SECRET_BITS) and len(others) == 4
    assert all(turns[0] == made.conversations[0][0] and turns[1][1] != answer for turns in others.conversations)
    assert get_task("classify").canary_candidates(made, 0, 4, rng) is None  # random labels hold no secret


# --- whole runs -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def split_sst2(tmp_path_factory):
    """200 real training sentences and 200 others to hold out (the bundled SST-2 sample)."""
    lines = (sample_data_dir() / "sst2_train.tsv").read_text(encoding="utf-8").splitlines()
    folder = tmp_path_factory.mktemp("audit-data")
    (folder / "train.tsv").write_text("\n".join(lines[:201]) + "\n", encoding="utf-8")
    (folder / "validation.tsv").write_text("\n".join([lines[0], *lines[201:401]]) + "\n", encoding="utf-8")
    return folder


def _config(model, data, method: str, privacy: Privacy, **training) -> RunConfig:
    settings = {"batch_size": 16, "device": "cpu", "warmup_ratio": 0.0, "eval_every": 1000}
    return RunConfig(model=ModelSpec(str(model)), method=MethodSpec(name=method),
                     data=DataSpec(train=str(data / "train.tsv"), validation=str(data / "validation.tsv"),
                                   max_length=32),
                     training=TrainingSpec(**{**settings, **training}), privacy=privacy)


@pytest.fixture(scope="module")
def memorising_run(tiny_models, split_sst2, tmp_path_factory):
    """Full finetuning without DP at a high rate, six passes over 200 rows and 100 canaries (about half trained)."""
    run_dir = tmp_path_factory.mktemp("full") / "run"
    config = _config(tiny_models["bert"], split_sst2, "full", Privacy(audit_canaries=100), epochs=6, lr=1e-3)
    finished = Trainer(config, run_dir).run()
    return run_dir, finished.metrics, audit_run(run_dir, "cpu")


def test_a_memorising_run_is_caught(memorising_run):
    run_dir, metrics, audit = memorising_run
    assert audit["mia_auc"] > 0.55 and audit["mia_tpr_at_1pct_fpr"] > 0.01
    assert audit["epsilon_lower_bound"] > 0.5  # clearly positive, from 100 canaries
    assert "epsilon" not in audit  # no DP, no guarantee
    assert audit["membership"] == {**audit["membership"], "members": 200, "non_members": 200}
    assert read_audit(run_dir) == json.loads((run_dir / AUDIT_FILE).read_text(encoding="utf-8")) == audit
    assert f"picks the training example {100 * audit['mia_auc']:.0f} % of the time; 50 % is guessing" in \
        audit["reading"]
    report = (run_dir / REPORT_NAME).read_text(encoding="utf-8")
    assert "trained without differential privacy" in report and audit["reading"] in report
    assert audit["audit_time_s"] < 0.2 * metrics["train_time_s"]


def test_canaries_train_but_stay_out_of_the_metrics_and_the_exports(memorising_run):
    run_dir, metrics, audit = memorising_run
    record = json.loads((run_dir / CANARIES_FILE).read_text(encoding="utf-8"))
    assert record["count"] == 100 and record["included"] == audit["one_run"]["included"]
    assert metrics["train_examples"] == 200 + record["included"] == 200 + metrics["audit_canaries_trained"]
    assert metrics["validation_examples"] == 200  # scored on the user's validation data alone
    exported = (run_dir / "vector.json").read_text(encoding="utf-8")
    assert "canar" not in exported.lower() and "audit" not in exported.lower()


def test_a_private_runs_bound_stays_under_its_epsilon(tiny_models, split_sst2, tmp_path):
    config = _config(tiny_models["bert"], split_sst2, "slash", Privacy(epsilon=3.0, accountant="rdp",
                                                                          audit_canaries=100), epochs=3, lr=0.05)
    finished = Trainer(config, tmp_path / "run").run()
    audit = audit_run(tmp_path / "run", "cpu")
    assert audit["epsilon"] == finished.metrics["privacy"]["epsilon_spent"] <= 3.0
    assert 0.0 <= audit["epsilon_lower_bound"] <= audit["epsilon"]
    assert audit["one_run"]["delta"] == finished.metrics["privacy"]["delta"]
    assert finished.metrics["privacy"]["train_examples"] == 200 + audit["one_run"]["included"]  # canaries count
    report = (tmp_path / "run" / REPORT_NAME).read_text(encoding="utf-8")
    assert "-differentially private" in report and "## Audit" in report and "the accountant guarantees" in report


def test_generate_canaries_hold_secrets_whose_exposure_is_measured(shared_data, tmp_path):
    """The tiny GPT-2 reads 128 tokens: the canaries named with the data's longest words (whole Chinese questions,
    one byte a token) have their secret past that, which the audit counts apart rather than ranking (every other
    secret would score the same, an exposure of 0)."""
    model = build_tiny_model("gpt2", tmp_path / "gpt2")
    config = RunConfig(model=ModelSpec(str(model)), method=MethodSpec(name="full"),
                       data=DataSpec(train=str(shared_data / "instruct" / "identity.json"), max_length=128,
                                     fill=("name=Ada", "author=Lab")),
                       training=TrainingSpec(max_steps=20, batch_size=8, lr=3e-3, device="cpu", eval_every=20),
                       privacy=Privacy(audit_canaries=24))
    Trainer(config, tmp_path / "run").run()
    audit = audit_run(tmp_path / "run", "cpu")
    exposure = audit["canary_exposure"]
    assert exposure["bits"] == pytest.approx(SECRET_BITS) and exposure["candidates"] == EXPOSURE_CANDIDATES
    assert exposure["cut_off"] > 0 and exposure["canaries"] > 0  # here 13 of 24 trained, 8 cut off (both kinds)
    assert exposure["canaries"] + exposure["cut_off"] <= 24 and exposure["canaries"] < audit["one_run"]["included"]
    assert 0.0 < exposure["mean"] <= exposure["max"] <= exposure["bits"]  # every ranked secret scored differently
    assert exposure["untrained_mean"] is not None and f"of {exposure['bits']:.1f}" in audit["reading"]
    assert f"{exposure['cut_off']} canaries' secrets lie past the run's maximum length" in audit["reading"]


def test_the_audit_is_refused_in_one_line_when_it_cannot_be_made(memorising_run, tmp_path, capsys):
    assert main(["audit", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith("holds no run (no readable config.json).")
    run_dir = memorising_run[0]
    stop = threading.Event()
    stop.set()
    before = (run_dir / AUDIT_FILE).read_bytes()
    with pytest.raises(AuditStopped, match="stopped; nothing was written"):
        audit_run(run_dir, "cpu", stop_event=stop)
    assert (run_dir / AUDIT_FILE).read_bytes() == before


def test_the_cli_prints_the_findings(memorising_run, capsys):
    assert main(["audit", str(memorising_run[0]), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert {"mia_auc", "mia_tpr_at_1pct_fpr", "epsilon_lower_bound", "reading"} <= set(printed)
    assert printed["reading"] in captured.err and "Scoring the canaries" in captured.err


def test_canaries_that_come_out_different_are_refused(tiny_models, split_sst2, tmp_path):
    config = _config(tiny_models["bert"], split_sst2, "head", Privacy(audit_canaries=10), max_steps=2)
    Trainer(config, tmp_path / "run").run()
    record = json.loads((tmp_path / "run" / CANARIES_FILE).read_text(encoding="utf-8"))
    (tmp_path / "run" / CANARIES_FILE).write_text(json.dumps({**record, "fingerprint": "0" * 64}), encoding="utf-8")
    with pytest.raises(ArtifactError, match="training data changed"):
        audit_run(tmp_path / "run", "cpu")


# --- private training that does not train -----------------------------------------------------------------------
def test_a_private_step_that_leaves_the_model_unchanged_stops(tiny_models, split_sst2, tmp_path, monkeypatch):
    """The failure of the Opacus report: the noisy update never reaches the model. Simulated by an optimizer whose
    step does nothing."""
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    config = _config(tiny_models["bert"], split_sst2, "slash", Privacy(epsilon=8.0, accountant="rdp"), max_steps=3)
    with pytest.raises(PrivacyError, match=r"stopped at step 1: the noisy update did not change the trainable "
                                           r"tensor\(s\) head.weight, head.bias, projected.z"):
        Trainer(config, tmp_path / "run").run()
