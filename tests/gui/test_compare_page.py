"""The Compare page on the tiny BERT: a quick side-by-side in the background, then its table and budget curve."""

import json

import pytest
from gui_helpers import choose_tiny_run

from jrft_desktop.core.paths import data_root
from jrft_desktop.gui.pages.compare_page import parse_curve

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = ("slash-output", "head", "vera", "full")


def test_compare_runs_in_the_background_and_shows_table_and_curve(qtbot, window, tiny_models, sst2_200):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200, method="head")
    page = window.compare_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.run_button.isEnabled(), timeout=60_000)
    assert {"slash-output", "lora-r8", "vera", "full"} <= set(page.method_boxes)
    page.choose(LABELS)
    page.budget_spin.setValue(24)
    page.steps_spin.setValue(3)
    page.curve_edit.setText("8, 16")
    page.memory_box.setChecked(False)
    progress = []
    page._relay.progress.connect(progress.append)
    page.splitter.setSizes([40, 1000])  # the table dragged down to a sliver

    page.run_button.click()
    assert page.running and page.stop_button.isEnabled() and not page.run_button.isEnabled()
    qtbot.waitUntil(lambda: not page.running, timeout=300_000)

    rising = [case.label for case in page.result.cases if case.not_converged]
    assert page.status.kind == ("warning" if rising else "info") and "results.md" in page.status.text()
    assert all(label in page.status.text() for label in rising)
    assert progress and progress[-1].done == progress[-1].total == page.progress.maximum() == page.progress.value()
    headers = [page.table.horizontalHeaderItem(column).text() for column in range(page.table.columnCount())]
    assert headers[:4] == ["method", "size", "trainable (with head)", "accuracy"]
    assert {"step ÷ full", "merged ÷ base", "vector ÷ full", "converged"} <= set(headers)
    marks = [page.table.item(row, headers.index("converged")).text() for row in range(page.table.rowCount())]
    assert [mark.startswith("not converged") for mark in marks] == [label in rising for label in LABELS]
    assert [page.table.item(row, 0).text() for row in range(page.table.rowCount())] == list(LABELS)
    assert page.table.viewport().height() >= page.table.verticalHeader().length()  # every row in view again
    vera_row = [page.table.item(2, column).text() for column in range(page.table.columnCount())]
    assert vera_row[1] == "rank 1" and vera_row[2].startswith("132 (")  # below VeRA's smallest size: rank 1
    assert page.table.item(3, headers.index("step ÷ full")).text() == "1.00×"
    assert page.curve_plot.point_count == 3 + len(LABELS)  # d = 8, 16 and the slash-output case (24)

    output = page.output
    assert output.parent == data_root() / "benchmarks"
    results = json.loads((output / "results.json").read_text(encoding="utf-8"))
    assert [case["label"] for case in results["cases"]] == list(LABELS)
    assert [point["d"] for point in results["curve"]] == [8, 16, 24]
    assert results["settings"]["steps"] == 3 and results["settings"]["batch_size"] == 8  # the Method page's batch
    assert all(case["peak_memory_mb"] is None for case in results["cases"])  # not measured, as asked
    for name in ("results.md", "budget_curve.png", "speed.png"):
        assert (output / name).is_file()
    assert page.folder_button.isEnabled() and page.run_button.isEnabled()


def test_compare_says_what_is_missing(qtbot, window):
    page = window.compare_page
    qtbot.waitUntil(lambda: page.run_button.isEnabled(), timeout=60_000)
    page.run_button.click()  # no data chosen yet
    assert not page.running and page.run_button.isEnabled()
    assert page.status.kind == "error" and "Cannot compare yet" in page.status.text()


def test_curve_values_are_parsed_or_refused():
    assert parse_curve("1024 64, 256 64") == (64, 256, 1024)
    assert parse_curve("") == ()
    for text in ("64 lots", "0", "-5", "1.5"):
        with pytest.raises(ValueError, match="positive whole numbers"):
            parse_curve(text)
