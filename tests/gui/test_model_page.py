"""Page 1: the bundled model is preselected and described; a folder, a Hub id and errors."""

from jrft_desktop.core.config import ModelSpec, field_help
from jrft_desktop.gui import dialogs


def test_bundled_model_is_preselected_and_described(qtbot, window):
    page = window.model_page
    assert page.bundled_radio.isChecked()
    qtbot.waitUntil(lambda: page.info is not None, timeout=60_000)
    assert page.facts["family"].text() == "bert"
    assert page.facts["layers"].text() == "6"
    assert page.facts["hidden"].text() == "384"
    assert page.facts["parameters"].text().startswith("22,713,216")
    assert page.facts["pooling"].text() == "mean"
    assert page.bundled_radio.toolTip() == field_help(ModelSpec, "name_or_path")
    assert page.trust_box.toolTip() == field_help(ModelSpec, "trust_remote_code")


def test_folder_picker_describes_a_local_model(qtbot, window, tiny_models, monkeypatch):
    monkeypatch.setattr(dialogs, "choose_folder", lambda *args: str(tiny_models["bert"]))
    page = window.model_page
    page.browse_button.click()
    qtbot.waitUntil(lambda: page.info is not None, timeout=60_000)
    assert page.folder_radio.isChecked() and page.folder_edit.isEnabled() and not page.hub_edit.isEnabled()
    assert (page.facts["family"].text(), page.facts["layers"].text(), page.facts["hidden"].text()) == ("bert", "2", "32")
    assert page.model_spec().name_or_path == str(tiny_models["bert"])


def test_unreadable_choices_say_why(qtbot, window, tmp_path):
    page = window.model_page
    page.choose_folder(str(tmp_path))  # a folder without config.json
    qtbot.waitUntil(lambda: page.status.kind == "error", timeout=60_000)
    assert "no config.json" in page.status.text()
    assert page.info is None and page.facts["family"].text() == "–"
    page.choose_hub("not a valid id!")
    qtbot.waitUntil(lambda: "Hugging Face Hub id" in page.status.text(), timeout=30_000)
    window.show_page(window.train_page)
    assert "Not ready" in window.train_page.plan_label.text()
    assert not window.train_page.start_button.isEnabled()
