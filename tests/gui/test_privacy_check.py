"""The Results page's privacy check: a finished run is audited in the background with progress, the reading appears
in plain words beside its figures, audit.json is written, a run audited before shows its findings at once, and Stop
ends a check without a dialog or a file. The privacy box sets the canaries and the privacy unit, and its σ preview
counts units as training does (the column's values, and the canaries that train)."""

from __future__ import annotations

import json

import pytest
from gui_helpers import choose_tiny_run

from jrft_desktop.core.audit.canaries import CANARIES_FILE, inclusion
from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, Privacy, RunConfig, TrainingSpec, field_help
from jrft_desktop.core.paths import runs_dir
from jrft_desktop.core.runs import AUDIT_FILE
from jrft_desktop.core.train.loop import Trainer


@pytest.fixture
def canary_run(tiny_models, sst2_200):
    run_dir = runs_dir() / "20250101-100000-head"
    config = RunConfig(model=ModelSpec(str(tiny_models["bert"])), data=DataSpec(train=str(sst2_200), max_length=32),
                       method=MethodSpec(name="head"), privacy=Privacy(audit_canaries=20),
                       training=TrainingSpec(max_steps=4, batch_size=8, eval_every=4, device="cpu"))
    Trainer(config, run_dir).run()
    return run_dir


def test_check_privacy_shows_the_reading(qtbot, window, canary_run):
    page = window.results_page
    page.open_run(canary_run)
    check = page.privacy_check
    qtbot.waitUntil(lambda: page.trained is not None and not check.isHidden(), timeout=60_000)
    assert check.audit is None and check.button.text() == "Check privacy" and "Not checked yet" in check.reading.text()
    table = page.metrics_table
    shown = {table.item(row, 0).text(): table.item(row, 1).text() for row in range(table.rowCount())}
    canaries = json.loads((canary_run / CANARIES_FILE).read_text(encoding="utf-8"))["included"]
    assert shown["… of which audit canaries"] == f"{canaries:,}" and canaries > 0
    metrics = json.loads((canary_run / "metrics.json").read_text(encoding="utf-8"))
    assert shown["Training examples"] == f"{metrics['train_examples']:,}"  # the user's rows and the canaries
    seen = []
    check._relay.moved.connect(lambda progress: seen.append(progress.message))
    check.button.click()
    assert check.busy and check.button.text() == "Stop" and not check.progress.isHidden()
    qtbot.waitUntil(lambda: not check.busy, timeout=60_000)
    assert "Scoring training examples" in seen and "Scoring the canaries" in seen
    assert check.audit is not None and (canary_run / AUDIT_FILE).is_file()
    assert "50 % is guessing" in check.reading.text() and "membership attack AUC" in check.figures.text()
    assert "(one run, 95 %)" in check.figures.text() and check.button.text() == "Check again"
    assert check.progress.isHidden()

    page.open_run(canary_run)  # audited before: its findings at once, without checking again
    qtbot.waitUntil(lambda: page.run is not None and not check.isHidden(), timeout=30_000)
    assert check.audit == page.privacy_check.audit and "50 % is guessing" in check.reading.text()
    qtbot.waitUntil(lambda: not page.busy, timeout=60_000)


def test_stop_ends_a_check_without_a_dialog(qtbot, window, canary_run, monkeypatch):
    page = window.results_page
    page.open_run(canary_run)
    check = page.privacy_check
    qtbot.waitUntil(lambda: page.trained is not None and not check.isHidden(), timeout=60_000)
    monkeypatch.setattr("jrft_desktop.gui.dialogs.show_failure", lambda *args: pytest.fail("a dialog for a Stop"))
    check.button.click()
    check.button.click()  # Stop
    qtbot.waitUntil(lambda: not check.busy, timeout=60_000)
    assert check.audit is None and not (canary_run / AUDIT_FILE).exists()
    assert check.button.text() == "Check privacy" and check.button.isEnabled()
    qtbot.waitUntil(lambda: not page.busy, timeout=60_000)


def test_the_privacy_box_sets_canaries_and_the_privacy_unit(qtbot, window, tiny_models, sst2_200):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200)
    group = window.method_page.privacy
    assert group.canaries_spin.toolTip() == field_help(Privacy, "audit_canaries")
    assert group.unit_edit.toolTip() == field_help(DataSpec, "privacy_unit")
    group.canaries_spin.setValue(300)
    config, _ = window.prepare_run()
    assert config.privacy == Privacy(audit_canaries=300) and config.data.privacy_unit is None  # canaries without DP
    group.accountant_combo.setCurrentText("rdp")
    group.set_enabled(True, epsilon=3.0)
    group.unit_edit.setText("author")  # no such column: said before training
    qtbot.waitUntil(lambda: not group.busy and bool(group.problem), timeout=60_000)
    assert "Column 'author' not found" in group.note.text() and group.noise_label.text() == "cannot train"
    group.unit_edit.setText("label")
    group.unit_rows_spin.setValue(4)
    qtbot.waitUntil(lambda: not group.busy and group.plan is not None, timeout=60_000)
    config, _ = window.prepare_run()
    # as training counts: the 2 values of the label among the training rows, and each canary that trains
    units = 2 + int(inclusion(300, config.training.seed).sum())
    assert group.plan.train_examples == units and group.plan.sample_rate == 8 / units
    assert f"N = {units:,} units: the distinct values of 'label' in the training rows, and each audit canary" in \
        group.note.text()
    assert config.data.privacy_unit == "label"
    assert config.privacy == Privacy(epsilon=3.0, accountant="rdp", max_rows_per_unit=4, audit_canaries=300)
    group.canaries_spin.setValue(0)  # the two labels alone: fewer units than a step samples
    qtbot.waitUntil(lambda: not group.busy and bool(group.problem), timeout=60_000)
    assert "is larger than the 2 training examples" in group.problem
