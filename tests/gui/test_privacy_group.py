"""Private training in the app: the privacy group computes the noise multiplier before training (or says why ε
cannot be reached), the choices become the run's Privacy settings, and the Train page plots ε spent live."""

import pytest
from gui_helpers import TINY_STEPS, choose_tiny_run, train

from jrft_desktop.core.config import Privacy, field_help
from jrft_desktop.core.events import FinishedEvent
from jrft_desktop.core.train.privacy import plan_privacy

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN_ROWS = 180  # the 200-row sample less its 10% validation split


def planned(qtbot, privacy_group):
    qtbot.waitUntil(lambda: not privacy_group.busy and bool(privacy_group.plan or privacy_group.problem),
                    timeout=60_000)
    return privacy_group.plan


def test_noise_is_shown_before_training_or_why_epsilon_cannot_be_reached(qtbot, window, tiny_models, sst2_200):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200)
    group = window.method_page.privacy
    assert group.clip_spin.toolTip() == field_help(Privacy, "max_grad_norm")
    group.accountant_combo.setCurrentText("rdp")
    group.set_enabled(True, epsilon=3.0)
    assert not group.form.isHidden()
    plan = planned(qtbot, group)
    expected = plan_privacy(Privacy(epsilon=3.0, accountant="rdp"), TRAIN_ROWS, 8, TINY_STEPS)  # as training will
    assert plan.noise_multiplier == expected.noise_multiplier and plan.delta == expected.delta
    assert group.noise_label.text() == f"σ = {expected.noise_multiplier:.3g}"
    assert f"q = {8 / TRAIN_ROWS:.3g}" in group.note.text()
    config, description = window.prepare_run()
    assert config.privacy == Privacy(epsilon=3.0, accountant="rdp")
    assert "private: ε ≤ 3" in description

    group.epsilon_spin.setValue(0.01)
    assert planned(qtbot, group) is None
    assert group.note.kind == "error" and "cannot be reached" in group.note.text()
    with pytest.raises(ValueError, match="cannot be reached"):
        window.prepare_run()
    assert not window.train_page.start_button.isEnabled()

    group.epsilon_spin.setValue(3.0)
    group.delta_edit.setText("0.5")
    planned(qtbot, group)
    assert "1/N = 1/180" in group.problem
    group.delta_edit.setText("tiny")
    with pytest.raises(ValueError, match="δ 'tiny' is not a number"):
        window.prepare_run()
    group.set_enabled(False)
    assert window.prepare_run()[0].privacy == Privacy()


def test_private_run_plots_epsilon_spent(qtbot, window, tiny_models, sst2_200):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200)
    group = window.method_page.privacy
    group.accountant_combo.setCurrentText("rdp")
    group.set_enabled(True, epsilon=4.0)
    planned(qtbot, group)
    window.train_page.refresh_plan()
    result = train(qtbot, window)
    assert isinstance(result, FinishedEvent) and result.status == "completed"
    plots = window.train_page.plots
    assert not plots.plots["epsilon"].isHidden() and plots.point_count("epsilon") == TINY_STEPS
    grid = plots.layout()  # ε joins a second row of three rather than a third row the window has no room for
    assert grid.getItemPosition(grid.indexOf(plots.plots["lr"]))[:2] == (0, 2)
    assert grid.getItemPosition(grid.indexOf(plots.plots["epsilon"]))[:2] == (1, 1)
    spent = result.metrics["privacy"]["epsilon_spent"]
    assert spent <= 4.0 and f"privacy spent ε = {spent:.2f}" in window.train_page.state_label.text()

    group.set_enabled(False)
    window.train_page.refresh_plan()
    train(qtbot, window)
    assert plots.plots["epsilon"].isHidden() and plots.point_count("epsilon") == 0
    assert grid.getItemPosition(grid.indexOf(plots.plots["throughput"]))[:2] == (1, 1)  # two by two again
    history = window.history_page  # the private run stands apart from the same method trained openly
    qtbot.waitUntil(lambda: not history.busy and history.table.rowCount() == 2, timeout=30_000)
    methods = sorted(history.table.item(row, 2).text() for row in range(2))
    assert methods == ["slash", f"slash, private ε = {spent:.2f}"]
