"""The Method page says, before training, which SLaSh positions fold into a family's stock class: on a family whose
stock class can hold only the attention shift (Qwen3, Gemma, OLMo 2), 'auto' is that position and the page says so;
another position is said not to fold, and which would (`jrft methods` prints the same plan note)."""

import pytest
from tiny_models import build_family_model


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    """Built before the window opens (its engine imports transformers in the background meanwhile)."""
    return build_family_model("qwen3", tmp_path_factory.mktemp("qwen3"))


def test_the_method_page_says_which_slash_positions_fold(qtbot, qwen3, window):
    window.model_page.choose_folder(str(qwen3))
    qtbot.waitUntil(lambda: window.model_page.info is not None and window.method_page.ready, timeout=60_000)
    page = window.method_page
    page.choose("slash", 32, pooling="auto")
    qtbot.waitUntil(lambda: page.plan is not None and not page.busy, timeout=30_000)
    assert page.plan.position == "attention"
    assert "only slash at attention folds into its stock class" in page.plan_note.text()
    assert page.plan_note.kind == "warning"
    page.choose("slash", position="output")
    qtbot.waitUntil(lambda: page.plan is not None and page.plan.position == "output" and not page.busy,
                    timeout=30_000)
    note = page.plan_note.text()
    assert "slash at the output position does not fold into a stock qwen3 model" in note and "attention would" in note
