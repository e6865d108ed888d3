"""Private training (DP-SGD through Opacus), checked against independent computations: per-example gradients
against a per-example loop, clipping hooked where Opacus applies it, the noise's standard deviation measured, ε
against two independent accountants (Microsoft's prv-accountant, Google's dp-accounting), resume, refusals, and
one private run of the real default model on a real SST-2 slice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import scipy.stats
import torch

from jrft_desktop.core import methods, runs
from jrft_desktop.core.export import merged as merged_form, vector as vector_file
from jrft_desktop.core.config import TrainingSpec, DataSpec, MethodSpec, ModelSpec, Privacy, RunConfig
from jrft_desktop.core.events import PreparedEvent, StepEvent
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.tasks.classify import Encoder
from jrft_desktop.core.paths import sample_data_dir
from jrft_desktop.core.privacy_report import REPORT_NAME
from jrft_desktop.core.train.privacy import (RDP_ORDERS, EpsilonCurve, PrivacyError, PrivateTraining,
                                             check_trainable_modules, per_example_gradients, plan_privacy)
from jrft_desktop.core.tasks import get_task
from jrft_desktop.core.train.loop import Trainer
from jrft_desktop.core.build import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN_ROWS = 180  # the 200-row slice less its 10% validation split


def sentences(count: int) -> tuple[list[str], torch.Tensor]:
    lines = (sample_data_dir() / "sst2_train.tsv").read_text(encoding="utf-8").splitlines()[1:count + 1]
    rows = [line.split("\t") for line in lines]
    return [text for text, _ in rows], torch.tensor([int(label) for _, label in rows])


def build(tiny_models, family: str, spec: MethodSpec, pooling: str = "cls"):
    torch.manual_seed(0)
    loaded = load_backbone(ModelSpec(str(tiny_models[family])))
    model, _, _ = build_model(ModelSpec(pooling=pooling), spec, None, 2, loaded=loaded)
    with torch.no_grad():  # z starts at zero; move it so every layer's shift matters
        for name, parameter in model.named_parameters():
            if name == "projected.z":
                parameter.normal_(0, 0.5)
    model.train(False)
    return model, Encoder(loaded.tokenizer, 32, model)


def classification_loss(logits, labels):
    return get_task("classify").loss_function("classification")(logits, labels)


def private_config(tiny_models, sst2_200, method="slash", privacy=None, **budget) -> RunConfig:
    settings = dict(max_steps=12, batch_size=8, gradient_accumulation=2, eval_every=4, lr=0.05, device="cpu")
    settings.update(budget)
    return RunConfig(model=ModelSpec(str(tiny_models["bert"])), data=DataSpec(train=str(sst2_200), max_length=32),
                     method=MethodSpec(name=method, d=32), training=TrainingSpec(**settings),
                     privacy=privacy or Privacy(epsilon=3.0, accountant="rdp"))


def train(config, run_dir, **kwargs):
    events: list = []
    finished = Trainer(config, run_dir, callbacks=[events.append, *kwargs.pop("callbacks", [])], **kwargs).run()
    return finished, events


def epsilons(events) -> list[float]:
    return [event.epsilon for event in events if isinstance(event, StepEvent)]


# --- per-example gradients ----------------------------------------------------------------------------------


CASES = [("bert", MethodSpec(name="slash", d=24, position=position)) for position in ("attention", "intermediate",
                                                                                         "output")] + [
    ("bert", MethodSpec(name="slash", d=24, on_the_fly=True)),  # z through the custom autograd Function
    ("roberta", MethodSpec(name="slash", d=24)), ("distilbert", MethodSpec(name="slash", d=24)),
    ("bert", MethodSpec(name="jr-warp", d=24)), ("distilbert", MethodSpec(name="jr-warp", d=24)),
    ("bert", MethodSpec(name="head")), ("bert", MethodSpec(name="bitfit")), ("bert", MethodSpec(name="lora", rank=2)),
    ("bert", MethodSpec(name="warp", prompt_tokens=2)), ("bert", MethodSpec(name="full")),
]


@pytest.mark.parametrize(("family", "spec"), CASES, ids=[
    f"{family}-{spec.name}-{spec.position}{'-fly' * spec.on_the_fly}" for family, spec in CASES])
def test_per_example_gradients_equal_a_loop_over_examples(tiny_models, family, spec):
    """Each example alone, unpadded, through an ordinary backward pass: the reference for every trainable tensor
    (z of SLaSh / JR-WARP included), for the general route (torch.func) and a method's own faster one (SLaSh's
    probes). Mean pooling, so padding would change the result if it leaked in."""
    model, encoder = build(tiny_models, family, spec, pooling="mean")
    texts, labels = sentences(5)
    rows, _ = encoder.encode(texts)
    batch = encoder.collate(rows)
    assert batch["attention_mask"].float().mean() < 1  # the batch is padded
    routes = {"torch.func": per_example_gradients(model, batch, labels, classification_loss)}
    own = methods.get_method(spec.name).per_example_gradients(model, batch, labels, classification_loss)
    assert (own is not None) == (spec.name == "slash")
    if own is not None:
        routes["method"] = own
        assert model.projected.probes is None  # the probes are gone after use

    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    for index, row in enumerate(rows):
        model.zero_grad()
        single = encoder.collate([row])
        loss = classification_loss(model(**single), labels[index:index + 1])
        loss.backward()
        for route, (grads, losses) in routes.items():
            assert set(grads) == set(trainable), route
            assert losses[index] == pytest.approx(loss.item(), rel=1e-5), route
            for name, parameter in trainable.items():
                expected = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
                scale = expected.abs().max().item() + 1e-8
                assert torch.allclose(grads[name][index], expected, atol=2e-5 * scale + 1e-7), (route, name)
    if spec.name in ("slash", "jr-warp"):
        for grads, _ in routes.values():
            assert grads["projected.z"].abs().sum(1).min() > 0  # z gets a real gradient from every example


# --- clipping and noise -------------------------------------------------------------------------------------


def make_private(model, privacy: Privacy, batch: int = 8, train_examples: int = 100,
                 steps: int = 10) -> PrivateTraining:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    plan = plan_privacy(privacy, train_examples, batch, steps)
    return PrivateTraining(plan, model, optimizer, torch.device("cpu"))


def test_every_per_example_gradient_is_clipped_to_c(tiny_models, monkeypatch):
    """Hooked where Opacus clips: its clip_and_accumulate multiplies each parameter's per-example gradients by the
    per-example factors in one einsum. The hook records both and measures each example's clipped norm over all
    parameters together."""
    model, encoder = build(tiny_models, "bert", MethodSpec(name="slash", d=24))
    clip = 0.05
    private = make_private(model, Privacy(noise_multiplier=1.0, max_grad_norm=clip, accountant="rdp"))
    recorded: list[tuple[torch.Tensor, torch.Tensor]] = []
    einsum = torch.einsum

    def recording_einsum(equation, *operands):
        if equation == "i,i...":
            recorded.append((operands[0].clone(), operands[1].clone()))
        return einsum(equation, *operands)

    monkeypatch.setattr(torch, "einsum", recording_einsum)
    texts, labels = sentences(12)
    rows, _ = encoder.encode(texts)
    physical = [(encoder.collate(rows[:7]), labels[:7]), (encoder.collate(rows[7:]), labels[7:])]
    loss_sum, examples = private.step(model, physical, classification_loss)
    monkeypatch.undo()

    count = len(private.parameters)
    assert examples == 12 and len(recorded) == 2 * count  # each parameter once per physical batch
    for first in (0, count):
        calls = recorded[first:first + count]
        factors = calls[0][0]
        assert all(torch.equal(factor, factors) for factor, _ in calls)
        raw = torch.sqrt(sum(grads.flatten(1).pow(2).sum(1) for _, grads in calls))
        clipped = torch.sqrt(sum((factors[:, None] * grads.flatten(1)).pow(2).sum(1) for _, grads in calls))
        assert (raw > clip).any()  # the bound was active, not vacuous
        assert (clipped <= clip * (1 + 1e-5)).all(), clipped
        assert torch.allclose(clipped[raw > clip], torch.full_like(clipped[raw > clip], clip), rtol=1e-4)
        assert torch.allclose(clipped[raw <= clip], raw[raw <= clip])  # small gradients pass unchanged


def test_noise_has_standard_deviation_sigma_times_c(tiny_models):
    """A batch whose loss has zero gradient leaves only the noise: the update direction the optimizer receives is
    noise / L with noise ~ N(0, (σC)^2) per coordinate. With n ≈ 40,000 coordinates the sample standard deviation
    has a relative standard error of 1/sqrt(2n) ≈ 0.35%; the tolerance is 2% (about 6 standard errors)."""
    model, encoder = build(tiny_models, "bert", MethodSpec(name="slash", d=40_000))
    sigma, clip, batch = 1.3, 0.7, 8
    private = make_private(model, Privacy(noise_multiplier=sigma, max_grad_norm=clip, accountant="rdp"), batch)
    seen = {}
    step = private.optimizer.original_optimizer.step

    def record_then_step(*args, **kwargs):
        seen.update({name: p.grad.detach().clone() for name, p in private.parameters})
        return step(*args, **kwargs)

    private.optimizer.original_optimizer.step = record_then_step
    texts, labels = sentences(6)
    rows, _ = encoder.encode(texts)
    private.step(model, [(encoder.collate(rows), labels)], lambda logits, target: logits.sum() * 0.0)

    noise = torch.cat([grad.flatten() for grad in seen.values()]).double() * batch
    assert noise.numel() > 40_000
    assert noise.std().item() == pytest.approx(sigma * clip, rel=0.02)
    assert abs(noise.mean().item()) < 6 * sigma * clip / noise.numel() ** 0.5
    assert scipy.stats.kstest(noise.numpy() / (sigma * clip), "norm").pvalue > 1e-4
    assert private.steps_taken == 1  # the step was counted


# --- ε against independent accountants ----------------------------------------------------------------------


def independent_epsilons(accountant: str, sigma: float, rate: float, delta: float, steps: list[int],
                         eps_error: float = 1e-3) -> list[float]:
    """The estimates of other libraries: Microsoft's prv-accountant for PRV, Google's dp-accounting for RDP (on the
    app's RDP orders: the orders are part of the method)."""
    if accountant == "prv":
        from prv_accountant import PoissonSubsampledGaussianMechanism, PRVAccountant

        mechanism = PoissonSubsampledGaussianMechanism(noise_multiplier=sigma, sampling_probability=rate)
        other = PRVAccountant(prvs=[mechanism], max_self_compositions=[max(steps)], eps_error=eps_error,
                              delta_error=delta / 1e3)
        return [other.compute_epsilon(delta=delta, num_self_compositions=[count])[1] for count in steps]
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(sigma))
    return [RdpAccountant(orders=list(RDP_ORDERS)).compose(event, count).get_epsilon(delta)
            for count in steps]


def independent_epsilon(accountant: str, sigma: float, rate: float, delta: float, steps: int) -> float:
    return independent_epsilons(accountant, sigma, rate, delta, [steps])[0]


def google_pld_epsilon(sigma: float, rate: float, delta: float, steps: int) -> float:
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(sigma))
    return PLDAccountant().compose(event, steps).get_epsilon(delta)


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_reported_epsilon_matches_independent_accountants(tiny_models, sst2_200, tmp_path, accountant):
    config = private_config(tiny_models, sst2_200, privacy=Privacy(epsilon=3.0, accountant=accountant))
    finished, events = train(config, tmp_path / "run")
    record = finished.metrics["privacy"]
    prepared = events[0]
    assert isinstance(prepared, PreparedEvent) and prepared.privacy["noise_multiplier"] == record["noise_multiplier"]
    sigma, rate, delta = record["noise_multiplier"], record["sample_rate"], record["delta"]
    assert rate == 16 / TRAIN_ROWS and delta == 1e-5 and record["steps"] == 12 and record["accountant"] == accountant
    reported = epsilons(events)
    assert len(reported) == 12 and reported == sorted(reported)
    # Never below, within 1%. PRV: the reported upper bound against the other library's estimate. RDP: the same
    # closed form evaluated by two libraries, equal up to floating-point rounding.
    floor = 1.0 if accountant == "prv" else 1 - 1e-9
    others = independent_epsilons(accountant, sigma, rate, delta, list(range(1, 13)))
    for step, (value, other) in enumerate(zip(reported, others), start=1):
        assert floor * other <= value <= 1.01 * other, (step, value, other)
    final = record["epsilon_spent"]
    assert final == reported[-1] <= 3.0
    assert final > 3.0 - 0.05  # calibrated: the noise spends the budget, it does not waste it
    if accountant == "prv":
        assert final == pytest.approx(google_pld_epsilon(sigma, rate, delta, 12), rel=0.01)
    # Recorded where the model goes.
    _, metadata = vector_file.read_vector(tmp_path / "run" / "vector.safetensors")
    assert metadata["privacy"] == record
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))["privacy"]
    assert saved == record
    for key in ("epsilon_target", "epsilon_spent", "delta", "noise_multiplier", "max_grad_norm", "sample_rate",
                "steps", "accountant", "opacus_version"):
        assert key in saved
    report = (tmp_path / "run" / REPORT_NAME).read_text(encoding="utf-8")
    assert f"({final:.3g}, {delta:.3g})-differentially private" in report and f"{sigma:.4g}" in report


def test_live_epsilon_on_a_long_run_is_within_one_percent_and_never_below():
    """Past the first 64 steps a running PRV step reports the exact ε of the next point of a 1% grid."""
    sigma, rate, delta, steps = 0.9, 0.02, 1e-5, 1000
    curve = EpsilonCurve(sigma, rate, delta, steps, "prv", eps_error=0.01)
    checked = [1, 7, 64, 65, 66, 150, 151, 498, 777, 999, 1000]
    for step, other in zip(checked, independent_epsilons("prv", sigma, rate, delta, checked, eps_error=0.01)):
        live, exact = curve.live(step), curve.epsilon(step)
        assert exact <= live <= 1.01 * exact, step
        assert other <= live <= 1.01 * other + 0.01, (step, live, other)
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = [(sigma, rate, steps)]
    assert curve.epsilon(steps) == accountant.get_epsilon(delta, eps_error=0.01)  # the accountant's own value


def test_evaluation_spends_no_privacy_budget(tiny_models, sst2_200, tmp_path):
    rarely = private_config(tiny_models, sst2_200, eval_every=12, max_steps=6)
    often = private_config(tiny_models, sst2_200, eval_every=1, max_steps=6)
    _, rare_events = train(rarely, tmp_path / "rare")
    finished, often_events = train(often, tmp_path / "often")
    assert epsilons(rare_events) == epsilons(often_events)
    assert finished.metrics["privacy"]["steps"] == 6  # six evaluations, six steps counted


def test_resume_continues_the_spent_epsilon(tiny_models, sst2_200, tmp_path, stop_at_step):
    config = private_config(tiny_models, sst2_200)
    _, straight = train(config, tmp_path / "straight")
    stop, stop_after_5 = stop_at_step(5)
    stopped, first = train(config, tmp_path / "run", stop_event=stop, callbacks=[stop_after_5])
    assert stopped.status == "stopped"
    saved = json.loads((tmp_path / "run" / runs.CHECKPOINT_DIR / "trainer.json").read_text(encoding="utf-8"))
    assert sum(count for _, _, count in saved["privacy"]["accountant_history"]) == 5
    resumed, second = train(None, tmp_path / "run", resume=True)
    assert [event.step for event in second if isinstance(event, StepEvent)] == list(range(6, 13))
    assert epsilons(first) + epsilons(second) == epsilons(straight)  # continues, does not restart at zero
    assert resumed.metrics["privacy"]["epsilon_spent"] == epsilons(straight)[-1]
    assert resumed.metrics["privacy"]["steps"] == 12


# --- refusals -----------------------------------------------------------------------------------------------


def test_plan_refusals_say_what_would_work():
    with pytest.raises(PrivacyError, match="ε must be a positive number"):
        plan_privacy(Privacy(epsilon=0.0), 1000, 32, 100)
    with pytest.raises(PrivacyError, match=r"1/N = 1/1000 = 0.001"):
        plan_privacy(Privacy(epsilon=3.0, delta=0.002), 1000, 32, 100)
    with pytest.raises(PrivacyError,
                       match=r"cannot be reached .* Within reach: ε ≥ [0-9.]+ for these steps, at most \d+ steps"):
        plan_privacy(Privacy(epsilon=0.3, accountant="rdp"), 200, 8, 400)
    with pytest.raises(PrivacyError, match=r"spends ε = [0-9.]+ .* or train at most \d+ steps"):
        plan_privacy(Privacy(epsilon=4.0, noise_multiplier=0.8, accountant="rdp"), 1000, 32, 300)
    with pytest.raises(PrivacyError, match="logical batch"):
        plan_privacy(Privacy(epsilon=1.0), 100, 128, 10)
    plan = plan_privacy(Privacy(noise_multiplier=1.0, accountant="rdp"), 1000, 32, 100)
    assert plan.epsilon_target is None and plan.noise_source == "given"
    assert plan.epsilon_planned == pytest.approx(independent_epsilon("rdp", 1.0, 0.032, 1e-5, 100), rel=0.01)
    assert plan.delta == 1e-5 and "1/(10 N)" in plan.delta_source  # min(1e-5, 1/(10 N))
    assert plan_privacy(Privacy(noise_multiplier=1.0, accountant="rdp"), 10**6, 32, 10).delta == 1e-7


@pytest.mark.parametrize(("flags", "message"), [
    (["--epsilon", "0"], "error: ε must be a positive number (got 0.0)"),
    (["--epsilon", "3", "--delta", "0.01"], "is not below 1/N = 1/180 = 0.00556"),
    (["--epsilon", "0.01"], "cannot be reached with 180 training examples, a logical batch of 8 and 12 steps"),
    (["--epsilon", "1", "--noise-multiplier", "0.3"], "The noise multiplier σ = 0.3 spends ε ="),
    (["--epsilon", "3", "--accountant", "moments"], "invalid choice: 'moments'"),
], ids=["epsilon-zero", "delta-above-1/N", "unreachable", "sigma-overspends", "unknown-accountant"])
def test_cli_refuses_before_training_in_one_line(tiny_models, sst2_200, tmp_path, capsys, flags, message):
    from jrft_desktop.cli import main

    output = tmp_path / "run"
    args = ["train", "--data", str(sst2_200), "--model", str(tiny_models["bert"]), "--max-length", "32",
            "--batch-size", "8", "--max-steps", "12", "--device", "cpu", "--output", str(output), *flags]
    try:
        status = main(args)
    except SystemExit as exit_:  # argparse refuses an unknown choice itself
        status = exit_.code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and message in lines[0], lines
    assert not output.exists()  # refused before training: nothing written


def test_modules_opacus_cannot_train_are_named_with_a_method_that_works(tiny_models):
    model, _ = build(tiny_models, "bert", MethodSpec(name="full"))
    model.backbone.pooler.activation = torch.nn.BatchNorm1d(32)  # trainable, mixes the examples of a batch
    model.train(True)
    with pytest.raises(PrivacyError, match=r"BatchNorm1d module backbone.pooler.activation .* such as slash"):
        check_trainable_modules(model)
    for parameter in model.backbone.pooler.activation.parameters():
        parameter.requires_grad_(False)  # frozen, as slash or head would leave it
    check_trainable_modules(model)


# --- the real default model ---------------------------------------------------------------------------------


def test_private_run_of_the_default_model_on_real_sst2(shared_data, tmp_path):
    """All-MiniLM-L6-v2, SLaSh d = 1024, ε = 8 on 512 real SST-2 training sentences (the PRV accountant, as in
    the paper); scored on 128 real validation sentences. Checks the records and the exports, not the accuracy
    (ten noisy steps)."""
    import pandas as pd

    validation = tmp_path / "validation.tsv"
    pd.read_csv(shared_data / "sst2" / "validation.tsv", sep="\t").head(128).to_csv(validation, sep="\t", index=False)
    config = RunConfig(
        model=ModelSpec(pooling="cls"),
        data=DataSpec(train=str(shared_data / "sst2" / "train.tsv"), validation=str(validation), max_length=48,
                      max_train_rows=512),
        method=MethodSpec(name="slash", d=1024),
        training=TrainingSpec(max_steps=10, batch_size=32, eval_every=10, device="cpu"),
        privacy=Privacy(epsilon=8.0),
    )
    finished, events = train(config, tmp_path / "run")
    record = finished.metrics["privacy"]
    assert finished.status == "completed" and record["steps"] == 10 and record["train_examples"] == 512
    assert record["sample_rate"] == 32 / 512 and record["delta"] == min(1e-5, 1 / 5120)
    assert 8.0 - 0.1 < record["epsilon_spent"] <= 8.0
    assert record["epsilon_spent"] == pytest.approx(independent_epsilon("prv", record["noise_multiplier"],
                                                                        32 / 512, record["delta"], 10), rel=0.01)
    assert 0.0 <= finished.metrics["accuracy"] <= 1.0 and finished.metrics["validation_examples"] == 128
    assert any("private training (DP-SGD)" in note for note in events[0].notes)
    merged = merged_form.export_merged(*_restored(tmp_path / "run"), tmp_path / "merged")
    manifest = json.loads((merged / merged_form.MANIFEST_NAME).read_text(encoding="utf-8"))
    assert manifest["privacy"] == record
    assert (merged / REPORT_NAME).read_text(encoding="utf-8").startswith("# Privacy report")
    assert (tmp_path / "run" / REPORT_NAME).is_file()


def _restored(run_dir: Path):
    restored = vector_file.restore(run_dir / "vector.safetensors")
    return restored.model, restored.method, restored.tokenizer, restored.metadata


def test_privacy_settings_round_trip_through_json():
    config = RunConfig(privacy=Privacy(epsilon=3.0, delta=1e-6, max_grad_norm=0.5, noise_multiplier=None,
                                       accountant="rdp"))
    assert RunConfig.from_json(config.to_json()) == config
    assert RunConfig.from_dict({}).privacy == Privacy() and not Privacy().enabled
    assert Privacy(noise_multiplier=1.0).enabled and Privacy(epsilon=1.0).enabled
    assert json.loads(config.to_json())["privacy"]["epsilon"] == 3.0
