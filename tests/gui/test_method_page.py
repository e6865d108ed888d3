"""Page 3: every method with its explanation, live parameter counts, presets, pooling advice, settings."""

import pytest
from PySide6.QtWidgets import QScrollArea

from jrft_desktop.core.config import MethodSpec, ModelSpec, Privacy, TrainingSpec, field_help
from jrft_desktop.core.methods import all_methods
from jrft_desktop.gui.pages.method_page import PRESETS

HEAD = 32 * 2 + 2  # the tiny model's hidden size 32, two classes


@pytest.fixture
def page(qtbot, window, tiny_models, sst2_200):
    window.model_page.choose_folder(str(tiny_models["bert"]))
    window.data_page.set_train(str(sst2_200))
    qtbot.waitUntil(lambda: window.method_page.ready and window.model_page.info is not None
                    and window.data_page.summary is not None, timeout=60_000)
    return window.method_page


def counted(qtbot, page):
    qtbot.waitUntil(lambda: page.plan is not None and not page.busy, timeout=30_000)
    return page.plan


def test_every_method_is_listed_with_its_explanation(page):
    names = [button.property("method") for button in page.method_group.buttons()]
    assert names == [method.name for method in all_methods()]
    for method in all_methods():
        button = page.findChild(type(page.method_group.buttons()[0]), f"method_{method.name}")
        assert button.toolTip() == method.summary
    assert page.position_combo.toolTip() == field_help(MethodSpec, "position")
    assert page.pooling_combo.toolTip() == field_help(ModelSpec, "pooling")
    assert page.training.batch_spin.toolTip() == field_help(TrainingSpec, "batch_size")
    assert page.privacy.epsilon_spin.toolTip() == field_help(Privacy, "epsilon")
    assert not page.privacy.active and page.privacy.form.isHidden()  # off until asked for


def test_budget_shows_trainable_parameters_live(qtbot, page):
    page.choose("slash", 32)
    plan = counted(qtbot, page)
    assert (plan.method_params, plan.head_params, plan.size) == (32, HEAD, 32)
    assert page.count_label.text() == f"{32 + HEAD} parameters"
    assert "d = 32" in page.count_detail.text() and f"{HEAD} in the head" in page.count_detail.text()
    page.size_spin.setValue(100)
    assert counted(qtbot, page).trainable_params == 100 + HEAD
    page.choose("lora", 8)
    assert counted(qtbot, page).method_params == 8 * 4 * (32 + 32)  # query and value in two layers
    assert page.size_label.text() == "Rank" and page.size_spin.toolTip() == field_help(MethodSpec, "rank")
    page.choose("vera", 4)  # per q and v weight: a vector over its 32 outputs and one over the rank
    assert counted(qtbot, page).method_params == 4 * (32 + 4) and page.size_label.text() == "Rank"
    page.choose("head")
    assert counted(qtbot, page).method_params == 0 and not page.size_spin.isEnabled()


def test_presets_and_method_defaults(qtbot, page):
    page.choose_preset("LoRA r=8")
    assert (page.method.name, page.size_spin.value()) == ("lora", 8)
    assert "0.001" in page.training.lr_edit.placeholderText()
    page.choose_preset(PRESETS[0].label)
    assert (page.method.name, page.size_spin.value()) == ("slash", 1024)
    assert page.preset_combo.currentText() == PRESETS[0].label
    assert "0.01" in page.training.lr_edit.placeholderText()
    page.size_spin.setValue(999)
    assert page.preset_combo.currentText() == "Custom"


def test_the_settings_shown_are_the_chosen_methods_options(qtbot, page):
    for method in all_methods():
        page.choose(method.name)
        shown = {name for name, control in page.option_controls.items() if page.placement_form.isRowVisible(control)}
        assert shown == set(method.option_names) - {method.size_name}, method.name
        assert page.method_spec().method_options() == method.option_names
    assert not page.placement_form.isRowVisible(page.position_combo)  # the last method, full, has no position
    page.choose("warp", 3, projection_seed=7)
    assert page.size_label.text() == "Prompt tokens" and page.size_spin.toolTip() == field_help(MethodSpec,
                                                                                                "prompt_tokens")
    assert page.method_spec() == MethodSpec(name="warp", prompt_tokens=3, projection_seed=7)
    assert counted(qtbot, page).method_params == 3 * 32
    page.choose("slash", 16, position="intermediate")
    assert page.size_label.text() == "d (size of the vector z)" and page.size_spin.maximum() == 1_000_000
    assert page.method_spec() == MethodSpec(name="slash", d=16, position="intermediate", projection_seed=7)  # kept
    page.choose_preset("VeRA r=256")
    assert page.method_spec() == MethodSpec(name="vera", rank=256) and page.preset_combo.currentText() == "VeRA r=256"


def test_pooling_and_merging_advice(qtbot, page):
    page.choose("slash", pooling="mean")
    assert page.merge_note.kind == "info" and "Every pooling exports a merged model" in page.merge_note.text()
    assert "mean pooling reached 82.7% and cls 80.6%" in page.merge_note.text()  # the measured trade-off
    page.choose("slash", pooling="cls")
    assert "sentence-transformers" in page.merge_note.text() and "ONNX" in page.merge_note.text()
    page.choose("jr-warp")
    assert page.merge_note.kind == "warning" and "vector file" in page.merge_note.text()


def test_the_choices_become_the_run_configuration(qtbot, window, page, tiny_models):
    page.choose("slash", 64, position="attention", pooling="cls")
    page.training.set_steps(50)
    page.training.max_length_spin.setValue(48)
    page.training.lr_edit.setText("2e-2")
    counted(qtbot, page)
    config, description = window.prepare_run()
    assert (config.method.name, config.method.d, config.method.position) == ("slash", 64, "attention")
    assert (config.model.name_or_path, config.model.pooling) == (str(tiny_models["bert"]), "cls")
    assert (config.training.max_steps, config.training.epochs, config.training.lr) == (50, None, 0.02)
    assert config.data.max_length == 48 and config.data.train.endswith("sst2_200.tsv")
    assert "SLaSh d=64" in description and "sst2_200.tsv" in description
    page.training.lr_edit.setText("fast")
    assert page.training.lr_note.kind == "error"
    with pytest.raises(ValueError, match="learning rate"):
        window.prepare_run()
    assert not window.train_page.start_button.isEnabled()


def test_the_page_fits_the_windows_first_width_without_scrolling_sideways(qtbot, window, page):
    """At the size the window first opens (1,320 x 860) every setting is in view across: the training length's
    three choices once made the page scroll sideways."""
    window.resize(1320, 860)
    window.show_page(page)
    counted(qtbot, page)
    sideways = page.findChild(QScrollArea).horizontalScrollBar()
    qtbot.waitUntil(lambda: page.isVisible(), timeout=10_000)
    qtbot.wait(200)  # the layout settles after the resize
    assert sideways.maximum() == 0, f"the Method page scrolls sideways by {sideways.maximum()} px"
