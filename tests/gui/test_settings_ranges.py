"""The app's number boxes offer the valid range the core declares (the one `jrft train` checks); a typed number
outside it (the learning rate, δ) is the core's one-line message on the page and in Start's dialog, never a
traceback; a runs folder that cannot be made (a virtual file system) is refused at Start, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from gui_helpers import choose_tiny_run, error_dialogs

from jrft_desktop.core import paths
from jrft_desktop.core.config import DataSpec, MethodSpec, Privacy, TrainingSpec, field_bounds, field_help

pytestmark = pytest.mark.usefixtures("one_thread")
VIRTUAL = Path("/proc/jrft-no-such-folder")


def refused_at_start(qtbot, window, title: str) -> str:
    window.show_page(window.train_page)
    window.train_page.start_button.setEnabled(True)  # as if clicked before the page greyed it out
    window.train_page.start_button.click()
    qtbot.waitUntil(lambda: bool(error_dialogs(window)), timeout=10_000)
    boxes = error_dialogs(window)
    assert len(boxes) == 1 and boxes[0].windowTitle() == title, [(b.windowTitle(), b.text()) for b in boxes]
    text = boxes[0].text()
    boxes[0].accept()
    assert not window.train_page.running
    return text


def test_the_boxes_offer_the_valid_range(qtbot, window, tiny_models, sst2_200):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200, steps=2)
    settings, privacy = window.method_page.training, window.method_page.privacy
    for box, cls, name, ceiling in ((settings.batch_spin, TrainingSpec, "batch_size", 65_536),
                                    (settings.steps_spin, TrainingSpec, "max_steps", 10_000_000),
                                    (settings.accumulation_spin, TrainingSpec, "gradient_accumulation", 4096),
                                    (settings.max_length_spin, DataSpec, "max_length", 8192),
                                    (window.method_page.size_spin, MethodSpec, "d", 1_000_000)):
        assert (box.minimum(), box.maximum()) == field_bounds(cls, name, ceiling=ceiling), name
    # a box whose lowest value means "not set" starts one below the range
    assert (settings.eval_spin.minimum(), settings.eval_spin.maximum()) == (0, 10_000_000)
    assert settings.eval_spin.specialValueText() and settings.checkpoint_spin.minimum() == 0
    assert settings.decay_spin.minimum() == 0 and settings.warmup_spin.minimum() == 0
    assert privacy.epsilon_spin.minimum() == pytest.approx(0.01) and privacy.clip_spin.minimum() == pytest.approx(0.001)
    assert window.data_page.fraction_spin.minimum() == 1  # percent: 0 is excluded
    for box, cls, name in ((settings.batch_spin, TrainingSpec, "batch_size"), (settings.lr_edit, TrainingSpec, "lr"),
                           (privacy.delta_edit, Privacy, "delta")):
        assert box.toolTip().startswith(field_help(cls, name)) and "Must be " in box.toolTip()


@pytest.mark.parametrize(("typed", "message"), [
    ("-1", "The learning rate must be a positive number (got -1.0); leave it unset for the method's default."),
    ("0", "The learning rate must be a positive number (got 0.0)"),
    ("nan", "The learning rate must be a positive number (got nan)"),
    ("fast", "The learning rate must be a positive number (got 'fast')"),
])
def test_a_learning_rate_out_of_range_is_the_core_s_line(qtbot, window, tiny_models, sst2_200, typed, message):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200, steps=2)
    settings = window.method_page.training
    settings.lr_edit.setText(typed)
    assert settings.lr_note.kind == "error" and message in settings.lr_note.text()
    with pytest.raises(ValueError, match="The learning rate must be a positive number"):
        window.prepare_run()
    assert message in refused_at_start(qtbot, window, "Not ready to train")
    assert not paths.runs_dir().exists()


def test_a_delta_of_one_is_the_core_s_line(qtbot, window, tiny_models, sst2_200):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200, steps=2)
    privacy = window.method_page.privacy
    privacy.set_enabled(True)
    privacy.delta_edit.setText("1")
    assert "δ must be between 0 and 1, both excluded (got 1.0)" in privacy.problem
    assert privacy.note.kind == "error"
    with pytest.raises(ValueError, match="δ must be between 0 and 1"):
        window.prepare_run()
    assert "δ must be between 0 and 1" in refused_at_start(qtbot, window, "Not ready to train")
    assert not paths.runs_dir().exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_runs_folder_on_a_virtual_file_system_is_refused_at_start(qtbot, window, tiny_models, sst2_200,
                                                                     monkeypatch):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200, steps=2)
    monkeypatch.setattr(paths, "runs_dir", lambda: VIRTUAL / "runs")
    text = refused_at_start(qtbot, window, "Cannot train")
    assert f"Cannot make a run folder in {VIRTUAL / 'runs'}: the folder cannot be made there" in text
    assert not VIRTUAL.exists()
