"""Privacy per person (`--privacy-unit COLUMN`): the rows of one unit are clipped together (the unit's gradient, the
mean of its rows' per-example gradients, has norm at most C), a sampled unit trains on at most max_rows_per_unit of
its rows, the accountant counts units (ε checked against Microsoft's prv-accountant), the audit's membership attack
goes by unit (no unit on both sides), and the column's problems are refused in one line."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from jrft_desktop.cli import main
from jrft_desktop.core.audit.leakage import _membership_examples, audit_run
from jrft_desktop.core.build import build_model
from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, Privacy, RunConfig, TrainingSpec
from jrft_desktop.core.errors import DataError, UserError
from jrft_desktop.core.events import StepEvent
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.paths import sample_data_dir
from jrft_desktop.core.privacy_report import REPORT_NAME
from jrft_desktop.core.tasks import get_task
from jrft_desktop.core.tasks.classify import Encoder, Examples
from jrft_desktop.core.train.loop import Trainer
from jrft_desktop.core.train.privacy import PrivacyUnits, PrivateTraining, per_example_gradients, plan_privacy

pytestmark = pytest.mark.usefixtures("one_thread")

USERS = 40  # user 0 wrote 41 rows, every other user 4 (200 rows in all)


def _owner(row: int) -> str:
    return "u0" if row < 44 else f"u{1 + (row - 44) // 4}"


@pytest.fixture(scope="module")
def by_user(tmp_path_factory):
    """200 real SST-2 sentences, each with the user who wrote it, and 100 others to validate on."""
    lines = (sample_data_dir() / "sst2_train.tsv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines[1:301]]
    folder = tmp_path_factory.mktemp("units")
    train = pd.DataFrame({"sentence": [text for text, _ in rows[:200]], "label": [label for _, label in rows[:200]],
                          "user": [_owner(row) for row in range(200)]})
    train.to_csv(folder / "train.csv", index=False)
    pd.DataFrame({"sentence": [t for t, _ in rows[200:]], "label": [lab for _, lab in rows[200:]]}).to_csv(
        folder / "validation.csv", index=False)
    return folder


def _loss(logits, labels):
    return get_task("classify").loss_function("classification")(logits, labels)


def test_a_units_rows_are_clipped_together(tiny_models, monkeypatch):
    """Hooked where Opacus clips (its one einsum of per-sample factors and gradients): the gradients it clips are
    one per unit, each the mean of that unit's rows' own gradients, and each leaves with norm at most C."""
    torch.manual_seed(0)
    loaded = load_backbone(ModelSpec(str(tiny_models["bert"])))
    model, _, _ = build_model(ModelSpec(pooling="mean"), MethodSpec(name="slash", d=24), None, 2, loaded=loaded)
    with torch.no_grad():
        model.projected.z.normal_(0, 0.5)
    model.train(False)
    encoder = Encoder(loaded.tokenizer, 32, model)
    lines = (sample_data_dir() / "sst2_train.tsv").read_text(encoding="utf-8").splitlines()[1:13]
    rows, _ = encoder.encode([line.split("\t")[0] for line in lines])
    labels = torch.tensor([int(line.split("\t")[1]) for line in lines])
    units = PrivacyUnits.of("user", ["a", "a", "a", "b", "b", "b", "b", "b", "c", "d", "d", "d"], max_rows=8)
    clip = 0.05
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    private = PrivateTraining(plan_privacy(Privacy(noise_multiplier=1.0, max_grad_norm=clip, accountant="rdp"),
                                           4, 2, 10), model, optimizer, torch.device("cpu"), units=units)
    batches = list(private.physical_batches([list(group) for group in units.rows], batch_size=8))
    assert [(rows_, owners) for rows_, owners in batches] == [([0, 1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 1, 1, 1, 1, 1]),
                                                              ([8, 9, 10, 11], [0, 1, 1, 1])]  # a unit never split
    recorded = []
    einsum = torch.einsum

    def recording_einsum(equation, *operands):
        if equation == "i,i...":
            recorded.append((operands[0].clone(), operands[1].clone()))
        return einsum(equation, *operands)

    physical = [(encoder.collate([rows[i] for i in picked]), labels[picked], owners) for picked, owners in batches]
    singles, _ = per_example_gradients(model, encoder.collate(rows), labels, _loss)
    monkeypatch.setattr(torch, "einsum", recording_einsum)
    _, examples = private.step(model, physical, _loss)
    monkeypatch.undo()
    assert examples == 12
    count = len(private.parameters)
    names = [name for name, _ in private.parameters]
    for first, groups in ((0, [[0, 1, 2], [3, 4, 5, 6, 7]]), (count, [[8], [9, 10, 11]])):
        calls = recorded[first:first + count]
        assert all(grads.shape[0] == len(groups) for _, grads in calls)  # one gradient per unit, not per row
        for name, (_, grads) in zip(names, calls):
            expected = torch.stack([singles[name][group].mean(0) for group in groups])
            assert torch.allclose(grads, expected, atol=1e-6), name
        factors = calls[0][0]
        raw = torch.sqrt(sum(grads.flatten(1).pow(2).sum(1) for _, grads in calls))
        clipped = torch.sqrt(sum((factors[:, None] * grads.flatten(1)).pow(2).sum(1) for _, grads in calls))
        assert (raw > clip).any() and (clipped <= clip * (1 + 1e-5)).all(), clipped


def test_a_sampled_unit_trains_on_at_most_its_cap():
    units = PrivacyUnits.of("user", ["big"] * 30 + ["small"] * 2, max_rows=4)
    assert units.record() == {"privacy_unit": "user", "units": 2, "rows": 32, "max_rows_per_unit": 4,
                              "capped_units": 1}
    model = torch.nn.Linear(2, 2)
    private = PrivateTraining(plan_privacy(Privacy(noise_multiplier=1.0, accountant="rdp"), 2, 2, 5), model,
                              torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"), units=units)
    draws = [private.sample() for _ in range(6)]  # q = 1: both units every time
    assert all(len(draw) == 2 and len(draw[0]) == 4 and draw[1] == [30, 31] for draw in draws)
    assert all(set(draw[0]) <= set(range(30)) for draw in draws)
    assert len({tuple(draw[0]) for draw in draws}) > 1  # drawn afresh each time


@pytest.fixture(scope="module")
def unit_run(tiny_models, by_user, tmp_path_factory):
    """A private run by user (6 steps of SLaSh at ε = 3): its folder, its result and the events it reported."""
    config = RunConfig(model=ModelSpec(str(tiny_models["bert"])), method=MethodSpec(name="slash", d=32),
                       data=DataSpec(train=str(by_user / "train.csv"), validation=str(by_user / "validation.csv"),
                                     max_length=32, privacy_unit="user"),
                       training=TrainingSpec(max_steps=6, batch_size=8, lr=0.05, device="cpu", eval_every=6),
                       privacy=Privacy(epsilon=3.0, max_rows_per_unit=4))
    events: list = []
    run_dir = tmp_path_factory.mktemp("by-user") / "run"
    return run_dir, Trainer(config, run_dir, [events.append]).run(), events


def test_epsilon_is_accounted_over_units(unit_run):
    from prv_accountant import PoissonSubsampledGaussianMechanism, PRVAccountant

    run_dir, finished, events = unit_run
    record = finished.metrics["privacy"]
    assert record["units"] == record["train_examples"] == USERS and record["rows"] == 200
    assert record["capped_units"] == 1 and record["max_rows_per_unit"] == 4 and record["privacy_unit"] == "user"
    assert record["sample_rate"] == 8 / USERS and record["delta"] == min(1e-5, 1 / (10 * USERS))
    other = PRVAccountant(prvs=[PoissonSubsampledGaussianMechanism(noise_multiplier=record["noise_multiplier"],
                                                                   sampling_probability=8 / USERS)],
                          max_self_compositions=[6], eps_error=1e-3, delta_error=record["delta"] / 1e3)
    independent = other.compute_epsilon(delta=record["delta"], num_self_compositions=[6])[1]
    assert independent <= record["epsilon_spent"] <= 1.01 * independent and record["epsilon_spent"] <= 3.0
    assert [event.epsilon for event in events if isinstance(event, StepEvent)][-1] == record["epsilon_spent"]
    assert any("per privacy unit 'user'" in note for note in events[0].notes)
    report = (run_dir / REPORT_NAME).read_text(encoding="utf-8")
    assert "with respect to each value of the column 'user'" in report and "40 units over 200 rows" in report


def test_the_membership_attack_goes_by_unit(unit_run):
    """One row of each of the 40 users against as many held-out rows; the held-out file names no user, which the
    audit says rather than claiming they are other people."""
    run_dir = unit_run[0]
    audit = audit_run(run_dir, "cpu")
    assert audit["membership"] == {**audit["membership"], "members": USERS, "non_members": USERS,
                                   "privacy_unit": "user", "member_units": USERS}
    assert audit["membership"]["non_member_units"].startswith("unknown")
    assert "one row of a different 'user'; the held-out rows do not say whose they are" in audit["reading"]
    assert "40 training against 40 held-out, one row of each 'user'" in (run_dir / REPORT_NAME).read_text("utf-8")


def test_members_and_non_members_never_share_a_unit():
    """Held-out rows name their unit (a split of one file): a unit on both sides is left out, every other one gives
    one seeded row, and as many units are drawn on each side."""
    def examples(units):
        return Examples(tuple(f"row {i} of {unit}" for i, unit in enumerate(units)), None, (0,) * len(units),
                        tuple(units))

    train = examples(["a"] * 5 + ["b"] * 3 + [f"t{i}" for i in range(10)])  # 12 units
    validation = examples(["a", "b", "b"] + [f"v{i // 2}" for i in range(16)])  # a and b trained: 8 unseen units
    data = SimpleNamespace(train=train, validation=validation)
    members, non_members, grouping = _membership_examples(data, 0, "user")
    assert grouping == {"privacy_unit": "user", "member_units": 12, "non_member_units": 8, "units_on_both_sides": 2}
    owners = [text.split(" of ")[1] for text in (*members.texts, *non_members.texts)]
    assert len(members) == len(non_members) == 8 and len(set(owners)) == 16  # one row each, no unit twice
    assert not {"a", "b"} & {text.split(" of ")[1] for text in non_members.texts}
    assert _membership_examples(data, 0, "user")[0] == members  # seeded
    assert [len(side) for side in _membership_examples(data, 0, None)[:2]] == [18, 18]  # by row: all it can
    with pytest.raises(UserError, match="no held-out row belongs to a 'user' that did not also train"):
        _membership_examples(SimpleNamespace(train=train, validation=examples(["a", "t3"])), 0, "user")


@pytest.mark.parametrize("task", ["classify", "tag"])
def test_the_split_holds_out_whole_units_and_the_units_follow_the_sampling(by_user, tmp_path, task):
    """A validation split carved from the file holds out whole units (the audit's held-out people never trained),
    about the asked share of the rows; the units stay with their rows through the sampling."""
    source = by_user / "train.csv"
    if task == "tag":  # the same sentences and owners as a tagging file (the first word tagged, an entity to learn)
        frame = pd.read_csv(source)
        source = tmp_path / "tags.jsonl"
        frame.assign(tokens=frame["sentence"].str.split(),
                     tags=lambda f: f["tokens"].map(lambda words: ["B-misc"] + ["O"] * (len(words) - 1))
                     )[["tokens", "tags", "user"]].to_json(source, orient="records", lines=True)
    data = get_task(task).load_data(DataSpec(train=str(source), privacy_unit="user", max_train_rows=120), seed=3)
    assert len(data.train.units) == len(data.train) == 120 and len(data.validation.units) == len(data.validation)
    assert not set(data.train.units) & set(data.validation.units) and len(set(data.validation.units)) >= 2
    assert "by 'user'" in data.validation_source
    texts = [text if isinstance(text, str) else " ".join(text) for text in (*data.train.texts, *data.validation.texts)]
    frame = pd.read_csv(by_user / "train.csv").drop_duplicates("sentence", keep=False)  # texts that name one row
    owner_of = dict(zip(frame["sentence"], frame["user"]))
    checked = [(owner_of[text], unit) for text, unit in zip(texts, (*data.train.units, *data.validation.units))
               if text in owner_of]
    assert len(checked) > 100 and all(owner == unit for owner, unit in checked)


def test_with_few_units_the_split_takes_rows_and_says_so(by_user):
    """Two units (the label as the unit): holding one out would leave one class to train on."""
    data = get_task("classify").load_data(DataSpec(train=str(by_user / "train.csv"), privacy_unit="label"), seed=3)
    assert set(data.train.units) == set(data.validation.units) == {"0", "1"}
    assert "stratified" in data.validation_source and any("Only 2 privacy units" in note for note in data.notes)


@pytest.mark.parametrize(("flags", "message"), [
    (["--privacy-unit", "author"], "Column 'author' not found in train.csv"),
    (["--privacy-unit", "user", "--max-rows-per-unit", "16"], "At most 16 rows per privacy unit is more than the "
                                                                "batch size 8"),
], ids=["no-such-column", "cap-above-batch"])
def test_unit_problems_are_refused_in_one_line(tiny_models, by_user, tmp_path, capsys, flags, message):
    args = ["train", "--data", str(by_user / "train.csv"), "--validation", str(by_user / "validation.csv"),
            "--model", str(tiny_models["bert"]), "--max-length", "32", "--batch-size", "8", "--max-steps", "2",
            "--device", "cpu", "--epsilon", "3", "--output", str(tmp_path / "run"), *flags]
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_blank_unit_is_refused(by_user, tmp_path):
    frame = pd.read_csv(by_user / "train.csv")
    frame.loc[5, "user"] = ""
    frame.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=r"1 row\(s\) of train.csv have an empty privacy unit 'user'"):
        get_task("classify").load_data(DataSpec(train=str(tmp_path / "train.csv"), privacy_unit="user"), seed=0)
