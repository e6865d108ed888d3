"""Pages 4 and 5 on the tiny BERT: train with live plots, pause, cancel (a resumable stop), resume, a failing run,
then the results: metrics, confusion matrix, try-it, both exports, and the merged model in stock transformers."""

import gc
import json
import threading
import time

import pytest
import torch
from gui_helpers import TINY_STEPS, choose_tiny_run, error_dialogs, train
from PySide6.QtCore import Qt

from jrft_desktop.core.events import FailedEvent, FinishedEvent, PreparedEvent, StepEvent
from jrft_desktop.core.paths import runs_dir
from jrft_desktop.gui import dialogs
from jrft_desktop.gui.backend import predict_with_stock_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_full_flow_train_results_and_exports(qtbot, window, tiny_models, sst2_200, tmp_path, monkeypatch):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200)
    result = train(qtbot, window)
    assert isinstance(result, FinishedEvent) and result.status == "completed"
    page = window.train_page
    assert page.plots.point_count("loss") == TINY_STEPS and page.plots.point_count("metric") == TINY_STEPS // 4
    assert page.plots.point_count("throughput") == TINY_STEPS
    assert page.progress.value() == page.progress.maximum() == TINY_STEPS
    assert page.probe.smooth(100, 300), f"the UI thread was blocked for {page.probe.long_blocks_ms} ms"
    assert page.results_button.isVisible()

    results = window.results_page
    page.results_button.click()
    assert window.stack.currentWidget() is results
    qtbot.waitUntil(lambda: results.confusion is not None, timeout=60_000)
    shown = {results.metrics_table.item(row, 0).text() for row in range(results.metrics_table.rowCount())}
    assert {"Validation accuracy", "Trainable parameters", "Steps"} <= shown
    assert sum(map(sum, results.confusion.matrix)) == 20 == result.metrics["validation_examples"]
    assert results.confusion.accuracy == pytest.approx(result.metrics["accuracy"])
    assert results.curves.point_count("loss") == TINY_STEPS

    results.try_edit.setText("a gorgeous , witty and moving film")
    qtbot.keyClick(results.try_edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: results.prediction is not None, timeout=30_000)
    assert results.prediction.label in ("0", "1")
    assert sum(results.prediction.probabilities.values()) == pytest.approx(1.0)
    assert results.bars.count() == 2

    monkeypatch.setattr(dialogs, "choose_save_file", lambda *args: str(tmp_path / "exports" / "sst2.safetensors"))
    results.vector_button.click()
    qtbot.waitUntil(lambda: not results.busy, timeout=30_000)
    copied = json.loads((tmp_path / "exports" / "sst2.json").read_text(encoding="utf-8"))
    assert copied == json.loads((results.run.path / "vector.json").read_text(encoding="utf-8"))
    assert (tmp_path / "exports" / "sst2.safetensors").read_bytes() == (results.run.path / "vector.safetensors").read_bytes()

    monkeypatch.setattr(dialogs, "choose_save_file", lambda *args: str(tmp_path / "exports" / "merged"))
    results.merged_button.click()  # a menu of the forms that fit a cls-pooled run, the stock classifier first
    assert [action.text() for action in offered(results)] == [
        "Transformers folder", "Sentence-transformers folder", "ONNX model"]
    offered(results)[0].trigger()
    qtbot.waitUntil(lambda: not results.busy, timeout=60_000)
    assert not error_dialogs(window)
    stock = predict_with_stock_model(tmp_path / "exports" / "merged", ["a gorgeous , witty and moving film"])[0]
    for label, probability in results.prediction.probabilities.items():
        assert stock[label] == pytest.approx(probability, abs=1e-4)


def offered(results) -> list:
    """The choices of the merged-model menu (each followed by a disabled caption: who loads it)."""
    actions = results.merged_menu.actions()
    assert results.merged_menu.isVisible() and all(not caption.isEnabled() for caption in actions[1::2])
    return [action for action in actions if action.isEnabled()]


def test_a_mean_pooled_run_offers_the_forms_that_fit(qtbot, window, tiny_models, sst2_200, tmp_path, monkeypatch):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200, steps=4, pooling="mean")
    assert train(qtbot, window).status == "completed"
    results = window.results_page
    qtbot.waitUntil(lambda: results.trained is not None and not results.busy, timeout=60_000)
    assert results.merged_button.isEnabled() and results.merge_problem == ""
    results.merged_button.click()
    assert [action.text() for action in offered(results)] == ["Sentence-transformers folder", "ONNX model"]
    assert "SentenceTransformer(folder)" in results.merged_menu.actions()[1].text()
    monkeypatch.setattr(dialogs, "choose_save_file", lambda *args: str(tmp_path / "onnx"))
    offered(results)[1].trigger()
    qtbot.waitUntil(lambda: not results.busy, timeout=60_000)
    assert not error_dialogs(window) and (tmp_path / "onnx" / "model.onnx").is_file()
    assert "onnxruntime" in results.status.text()


def test_a_run_that_cannot_merge_offers_no_form(qtbot, window, tiny_models, sst2_200):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200, steps=4, method="warp", size=2)
    assert train(qtbot, window).status == "completed"
    results = window.results_page
    qtbot.waitUntil(lambda: results.trained is not None and not results.busy, timeout=60_000)
    assert results.forms == () and not results.merged_button.isEnabled()  # no button that leads to a refusal
    assert "cannot be folded" in results.merged_button.toolTip() and "vector file" in results.status.text()


def test_pause_then_cancel_stops_within_a_step_and_resumes_from_history(qtbot, window, tiny_models, sst2_200):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200, steps=400, eval_every=100)
    page = window.train_page
    ended = []
    page.run_ended.connect(ended.append)
    window.show_page(page)
    page.start_button.click()
    run = page.run
    steps_taken = []  # (time, step) as the trainer reports them, from its own thread
    run._worker.event.connect(lambda event: isinstance(event, StepEvent) and steps_taken.append(
        (time.perf_counter(), event.step)), Qt.ConnectionType.DirectConnection)
    qtbot.waitUntil(lambda: len(steps_taken) >= 3, timeout=60_000)

    page.pause_button.click()
    paused_at = time.perf_counter()
    time.sleep(0.5)
    assert len([t for t, _ in steps_taken if t > paused_at]) <= 1  # the step in flight, then it waits
    assert page.pause_button.text() == "Resume" and "Paused" in page.state_label.text()
    page.pause_button.click()  # resume
    qtbot.waitUntil(lambda: steps_taken[-1][0] > paused_at + 0.5, timeout=30_000)

    page.cancel_button.click()
    cancelled_at = time.perf_counter()
    qtbot.waitUntil(lambda: bool(ended), timeout=60_000)
    assert ended[0].status == "stopped"
    assert len([t for t, _ in steps_taken if t > cancelled_at]) <= 1
    stopped_step = steps_taken[-1][1]
    assert stopped_step < 400 and page.resume_button.isVisible()

    history = window.history_page
    window.show_page(history)
    qtbot.waitUntil(lambda: len(history.runs) == 1, timeout=30_000)
    assert history.runs[0].status == "stopped" and history.runs[0].steps == f"{stopped_step} of 400"
    history.select([history.runs[0].name])
    assert history.resume_button.isEnabled()
    ended.clear()
    history.resume_button.click()
    assert window.stack.currentWidget() is page
    qtbot.waitUntil(lambda: bool(ended), timeout=120_000)
    assert ended[0].status == "completed" and ended[0].metrics["train_steps"] == 400
    assert page.plots.point_count("loss") == 400  # the earlier steps from the checkpoint, then the new ones


def test_a_failing_run_shows_an_error_and_the_app_stays_usable(qtbot, window, tiny_models, sst2_200, tmp_path):
    data = tmp_path / "reviews.tsv"
    data.write_text(sst2_200.read_text(encoding="utf-8"), encoding="utf-8")
    choose_tiny_run(qtbot, window, tiny_models["bert"], data, steps=4)
    data.write_text("sentence\tlabel\n", encoding="utf-8")  # spoiled after the Data page checked it
    result = train(qtbot, window)
    assert isinstance(result, FailedEvent) and result.user_error
    boxes = error_dialogs(window)
    assert len(boxes) == 1 and "no data rows" in boxes[0].text() and boxes[0].detailedText()
    assert "Training failed" in window.train_page.state_label.text()
    boxes[0].accept()

    assert window.train_page.start_button.isVisible() and window.train_page.start_button.isEnabled()
    window.data_page.set_train(str(sst2_200))
    qtbot.waitUntil(lambda: window.data_page.summary is not None, timeout=30_000)
    assert train(qtbot, window).status == "completed"


def test_training_runs_in_its_own_thread(qtbot, window, tiny_models, sst2_200):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200, steps=4)
    threads = []
    window.train_page.start_button.click()
    window.train_page.run._worker.event.connect(lambda event: threads.append(threading.get_ident()),
                                                Qt.ConnectionType.DirectConnection)
    qtbot.waitUntil(lambda: not window.train_page.running, timeout=60_000)
    assert threads and threading.get_ident() not in threads
    assert torch.get_num_threads() == 1  # the tests' one-thread setting reached the worker too



def test_runs_take_their_objects_off_the_collector_and_still_free_them(qtbot, window, tiny_models, sst2_200):
    """Once a run is prepared its objects leave the cyclic collector's walks (full collections during training
    stay short, the UI smooth); after the run they are freed all the same: nothing stays frozen run after run."""
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200, steps=2)
    page = window.train_page
    for _ in range(2):
        before = gc.get_freeze_count()
        at_prepared = []
        page.start_button.click()
        page.run.event.connect(lambda event: at_prepared.append(gc.get_freeze_count())
                               if isinstance(event, PreparedEvent) else None)
        qtbot.waitUntil(lambda: not page.running, timeout=60_000)
        gc.collect()
        assert at_prepared and at_prepared[0] - before > 1000
    # The second run's model and data were freed; what stays is the app's own record of the run (a few hundred).
    assert gc.get_freeze_count() - before < (at_prepared[0] - before) / 4


def test_a_step_is_measured_before_start_and_nothing_is_saved(qtbot, window, tiny_models, sst2_200):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200)
    page = window.train_page
    window.show_page(page)
    assert page.measure_button.isVisible() and page.measure_button.isEnabled()
    runs = runs_dir()
    before = sorted(runs.glob("*")) if runs.exists() else []
    page.measure_button.click()
    qtbot.waitUntil(lambda: page.state_label.text().startswith(("Measured", "Could not")), timeout=120_000)
    assert "a step takes" in page.state_label.text() and "at its peak" in page.state_label.text()
    assert page.measure_button.isEnabled()
    assert (sorted(runs.glob("*")) if runs.exists() else []) == before  # no run folder was made
