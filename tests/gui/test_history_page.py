"""Page 6: the runs folder listed; reopen, compare, resume and delete runs."""

import threading

import pytest
from PySide6.QtWidgets import QApplication

from jrft_desktop.core.config import TrainingSpec, DataSpec, MethodSpec, ModelSpec, RunConfig
from jrft_desktop.core.events import StepEvent
from jrft_desktop.core.paths import runs_dir
from jrft_desktop.core.train.loop import Trainer
from jrft_desktop.gui import dialogs

pytestmark = pytest.mark.usefixtures("one_thread")


def make_run(name: str, model, data, method: str = "slash", stop_after: int | None = None, **sizes):
    """A real run in the runs folder, made with the core trainer (what the Train page does, without the UI)."""
    config = RunConfig(model=ModelSpec(str(model), pooling="cls"), data=DataSpec(train=str(data), max_length=32),
                       method=MethodSpec(name=method, **sizes),
                       training=TrainingSpec(max_steps=8, batch_size=8, eval_every=4, lr=0.05, device="cpu"))
    stop = threading.Event()

    def stop_early(event):
        if isinstance(event, StepEvent) and event.step == stop_after:
            stop.set()

    return Trainer(config, runs_dir() / name, [stop_early], stop_event=stop).run()


@pytest.fixture
def runs(tiny_models, sst2_200):
    make_run("20250101-100000-slash", tiny_models["bert"], sst2_200, d=32)
    make_run("20250101-110000-lora", tiny_models["bert"], sst2_200, method="lora", rank=2)
    make_run("20250101-120000-head", tiny_models["bert"], sst2_200, method="head", stop_after=3)


def listed(qtbot, window):
    history = window.history_page
    window.show_page(history)
    qtbot.waitUntil(lambda: not history.busy and len(history.runs) == 3, timeout=30_000)
    return history


def test_runs_are_listed_with_method_data_metric_and_status(qtbot, window, runs):
    history = listed(qtbot, window)
    rows = {history.table.item(row, 1).text(): [history.table.item(row, column).text() for column in range(8)]
            for row in range(history.table.rowCount())}
    assert set(rows) == {"20250101-100000-slash", "20250101-110000-lora", "20250101-120000-head"}
    slash = rows["20250101-100000-slash"]
    assert slash[2:4] == ["slash", "sst2_200.tsv"] and slash[4].startswith("accuracy 0.") and slash[5] == "completed"
    assert slash[6] == f"{32 + 66}"
    assert rows["20250101-120000-head"][5] == "stopped" and rows["20250101-120000-head"][7] == "3 of 8"
    assert not history.compare_button.isEnabled()


def test_reopen_a_run(qtbot, window, runs):
    history = listed(qtbot, window)
    history.select(["20250101-110000-lora"])
    history.open_button.click()
    results = window.results_page
    assert window.stack.currentWidget() is results
    qtbot.waitUntil(lambda: results.confusion is not None, timeout=60_000)
    assert results.run.method == "lora" and results.curves.point_count("loss") == 8
    assert results.curves.point_count("metric") == 2


def test_compare_runs(qtbot, window, runs):
    history = listed(qtbot, window)
    history.select(["20250101-100000-slash", "20250101-110000-lora"])
    assert history.compare_button.isEnabled()
    history.compare_button.click()
    qtbot.waitUntil(lambda: history.comparison.isVisible() and history.compare_table.rowCount() == 2, timeout=30_000)
    assert sorted(history.compare_plots.series_names()) == ["20250101-100000-slash", "20250101-110000-lora"]
    assert history.compare_plots.point_count("loss") == 16 and history.compare_plots.point_count("metric") == 4
    assert {history.compare_table.item(row, 1).text() for row in range(2)} == {"slash", "lora"}
    history.table.parentWidget().setSizes([10, 1000])  # the comparison dragged up as far as it goes
    QApplication.processEvents()
    assert history.table.viewport().height() >= history.table.verticalHeader().length()  # all three runs in view


def test_delete_asks_first(qtbot, window, runs, monkeypatch):
    history = listed(qtbot, window)
    history.select(["20250101-100000-slash"])
    history.open_button.click()
    asked = []
    monkeypatch.setattr(dialogs, "confirm", lambda parent, title, question: asked.append(question) or False)
    window.show_page(history)
    history.select(["20250101-100000-slash"])
    history.delete_button.click()
    assert "20250101-100000-slash" in asked[0] and (runs_dir() / "20250101-100000-slash").is_dir()
    monkeypatch.setattr(dialogs, "confirm", lambda *args: True)
    history.delete_button.click()
    qtbot.waitUntil(lambda: len(history.runs) == 2, timeout=30_000)
    assert not (runs_dir() / "20250101-100000-slash").exists()
    qtbot.waitUntil(lambda: not window.results_page.busy, timeout=30_000)
    assert "holds no run" in window.results_page.run_label.text()
