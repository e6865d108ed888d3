"""Token data in the app: the Data page previews words with their tags and counts the tags; a tagging run's Results
page shows precision / recall / F1 per entity type and highlights the entities it finds in a typed sentence."""

from __future__ import annotations

import pytest
from gui_helpers import choose_tiny_run, train
from PySide6.QtCore import Qt

from jrft_desktop.core.events import FinishedEvent
from jrft_desktop.core.tasks.tag import load_tag_data


def wnut_slice(shared_data, path, sentences: int):
    lines, seen = [], 0
    for line in (shared_data / "wnut17" / "train.conll").read_text(encoding="utf-8").splitlines():
        lines.append(line)
        seen += not line.strip()
        if seen == sentences:
            break
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_data_page_previews_tokens_with_their_tags(qtbot, window, shared_data, tmp_path, sst2_200):
    page = window.data_page
    page.set_train(str(wnut_slice(shared_data, tmp_path / "train.conll", 300)))
    qtbot.waitUntil(lambda: page.summary is not None and not page.busy, timeout=30_000)
    assert page.preview.task == "tag" and page.preview.tagged[0][:2] == (("@paulwalk", "O"), ("It", "O"))
    assert not page.token_preview.isHidden() and page.preview_view.isHidden()
    shown = page.token_preview.toPlainText()
    assert "Empire" in shown and "B-location" in shown
    assert page.column_form.labelForField(page.text_combo).text() == "Tokens"
    assert page.column_form.labelForField(page.label_combo).text() == "Tags"
    assert not page.column_form.isRowVisible(page.pair_combo)
    assert (page.text_combo.currentText(), page.label_combo.currentText()) == ("tokens", "tags")
    assert "Token tagging with" in page.summary_label.text()
    tags = [page.distribution.item(row, 0).text() for row in range(page.distribution.rowCount())]
    assert tags[0] == "O" and "B-person" in tags and not page.distribution.isHidden()
    counts = {tags[row]: int(page.distribution.item(row, 1).text().replace(",", "")) for row in range(len(tags))}
    training = load_tag_data(page.data_spec(), 0).train  # the 270 sentences training will see, word by word
    assert sum(counts.values()) == sum(len(spans) for spans in training.spans)
    method = window.method_page  # a tag for every token: no pooling to choose
    assert not method.placement_form.isRowVisible(method.pooling_combo)
    assert "which tags every token, so pooling does not apply" in method.merge_note.text()

    page.set_train(str(sst2_200))  # back to a table of texts: its own column names and preview
    qtbot.waitUntil(lambda: page.summary is not None and not page.busy, timeout=30_000)
    assert page.column_form.labelForField(page.text_combo).text() == "Text"
    assert page.column_form.isRowVisible(page.pair_combo) and page.token_preview.isHidden()
    assert method.placement_form.isRowVisible(method.pooling_combo) and "Every pooling" in method.merge_note.text()


@pytest.mark.usefixtures("one_thread")
def test_results_page_scores_entity_types_and_highlights_entities(qtbot, window, tiny_models, shared_data, tmp_path):
    choose_tiny_run(qtbot, window, tiny_models["bert"], wnut_slice(shared_data, tmp_path / "train.conll", 300),
                    steps=8, size=32, pooling="auto")
    result = train(qtbot, window)
    assert isinstance(result, FinishedEvent) and result.status == "completed"
    results = window.results_page
    window.train_page.results_button.click()
    qtbot.waitUntil(lambda: results.trained is not None and not results.busy, timeout=60_000)
    assert results.confusion_box.isHidden() and not results.entity_box.isHidden()
    table = results.entity_box.findChild(type(results.metrics_table), "perType")
    per_type = result.metrics["per_type"]
    assert table.rowCount() == len(per_type)
    assert [table.item(row, 0).text() for row in range(table.rowCount())] == sorted(per_type)
    shown = {results.metrics_table.item(row, 0).text() for row in range(results.metrics_table.rowCount())}
    assert {"Validation entity F1", "Validation entity precision", "Validation token accuracy"} <= shown
    assert result.metrics["pooling"] is None and "Pooling" not in shown
    assert results.try_button.text() == "Find entities"

    sentence = "Alice flew from Paris to New York"
    results.try_edit.setText(sentence)
    qtbot.keyClick(results.try_edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: results.prediction is not None, timeout=30_000)
    entities = results.prediction.entities
    assert entities is not None and all(sentence[e["start"]:e["end"]] == e["text"] for e in entities)
    answer = results.answer_label.text()
    assert "background-color" in answer and "Alice" in answer and "types:" in answer
