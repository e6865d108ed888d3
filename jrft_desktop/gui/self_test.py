"""`jrft-desktop --self-test`: drive the real window through the whole path, as a user would click it.

Bundled model and SST-2 sample, SLaSh with pooling 'cls' (its merged model is the stock transformers classifier), a
short run; then the plots, the results, both exports, and the merged model reloaded with stock transformers. Exit 0
only if every step worked; otherwise one line says which step failed and why."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QMessageBox

from ..core.events import FinishedEvent
from .backend import predict_with_stock_model
from .lag_probe import RECORDED_MS
from .main_window import MainWindow
from .worker import run_in_background

STEPS = 20
EVAL_EVERY = 10
MAX_LENGTH = 64
BATCH_SIZE = 16
VALIDATION_PERCENT = 5  # 200 held-out sentences keep each evaluation short on a laptop CPU
SENTENCE = "a gorgeous , witty and moving film"
MAX_LAG_MS = 100  # the UI thread must not be blocked longer than this while training ...
ONE_STALL_MS = 300  # ... but for one stall shorter than this (see LagProbe.smooth)
PROBABILITY_TOLERANCE = 1e-3


class SelfTestFailed(Exception):
    pass


def wait_until(window: MainWindow, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Run the event loop until `condition()` holds; fail on timeout or when an error dialog shows."""
    deadline = time.perf_counter() + timeout_s
    loop = QEventLoop()
    while not condition():
        errors = [box for box in window.findChildren(QMessageBox)
                  if box.objectName() == "errorDialog" and box.isVisible()]
        if errors:
            raise SelfTestFailed(f"{what}: the app showed an error: {errors[0].text()}")
        if time.perf_counter() > deadline:
            raise SelfTestFailed(f"{what}: not done after {timeout_s:.0f} s")
        QTimer.singleShot(20, loop.quit)
        loop.exec()


class SelfTest:
    def __init__(self, window: MainWindow):
        self.window = window
        self.started = time.perf_counter()

    def log(self, message: str) -> None:
        print(f"self-test [{time.perf_counter() - self.started:5.1f} s] {message}", flush=True)

    def run(self) -> int:
        try:
            with tempfile.TemporaryDirectory(prefix="jrft-self-test-exports-") as exports:
                self._run(Path(exports))
        except SelfTestFailed as failure:
            print(f"self-test FAILED: {failure}", file=sys.stderr, flush=True)
            return 1
        self.log("passed")
        return 0

    def _run(self, exports: Path) -> None:
        self._choose_model()
        self._choose_data()
        self._choose_method()
        self._train()
        self._check_results()
        self._export(exports)
        self._reload_merged_model(exports)

    def _choose_model(self) -> None:
        window, model = self.window, self.window.model_page
        model.choose_bundled()
        wait_until(window, lambda: model.info is not None or model.status.kind == "error", 120, "describe the model")
        if model.info is None:
            raise SelfTestFailed(f"the bundled model cannot be read: {model.status.text()}")
        self.log(f"model: {model.info.family}, {model.info.layers} layers, {model.info.parameters:,} parameters")

    def _choose_data(self) -> None:
        window, data = self.window, self.window.data_page
        window.show_page(data)
        data.use_sample()
        data.fraction_spin.setValue(VALIDATION_PERCENT)
        data.set_validation("")
        wait_until(window, lambda: data.summary is not None and not data.busy or bool(data.error), 60, "read the data")
        if data.summary is None:
            raise SelfTestFailed(f"the bundled sample cannot be read: {data.error}")
        self.log(f"data: {data.summary.train_rows:,} training and {data.summary.validation_rows:,} validation rows")

    def _choose_method(self) -> None:
        window, method = self.window, self.window.method_page
        window.show_page(method)
        wait_until(window, lambda: method.ready, 120, "load the methods")
        method.choose_preset("SLaSh d=1024 (paper)")
        method.choose("slash", pooling="cls")
        method.training.set_steps(STEPS)
        method.training.eval_spin.setValue(EVAL_EVERY)
        method.training.max_length_spin.setValue(MAX_LENGTH)
        method.training.batch_spin.setValue(BATCH_SIZE)
        wait_until(window, lambda: method.plan is not None and not method.busy or bool(method.plan_error), 60,
                        "count the parameters")
        if method.plan is None:
            raise SelfTestFailed(f"the method cannot be planned: {method.plan_error}")
        self.log(f"method: {method.describe_choice()}, {method.plan.trainable_params:,} trainable parameters")

    def _train(self) -> None:
        """Train to the end; the plots must hold every point and the UI thread must not have been blocked."""
        window, train = self.window, self.window.train_page
        window.show_page(train)
        if not train.start_button.isEnabled():
            raise SelfTestFailed(f"Start is disabled: {train.plan_label.text()}")
        ended = []
        train.run_ended.connect(ended.append)
        train.start_button.click()
        wait_until(window, lambda: bool(ended), 300, "train")
        result = ended[0]
        if not isinstance(result, FinishedEvent) or result.status != "completed":
            raise SelfTestFailed(f"training did not complete: {result}")
        points = {kind: train.plots.point_count(kind) for kind in train.plots.kinds}
        if points["loss"] != STEPS or points["metric"] < STEPS // EVAL_EVERY:
            raise SelfTestFailed(f"the plots are missing points: {points}")
        metric = result.metrics["metric"]
        blocks = ", ".join(f"{lag:.0f}" for lag in train.probe.long_blocks_ms) or "none"
        self.log(f"trained: {metric} {result.metrics[metric]:.4f}; plot points {points}; longest UI-thread block "
                 f"{train.max_lag_ms:.0f} ms (blocks of {RECORDED_MS} ms or more: {blocks})")
        if not train.probe.smooth(MAX_LAG_MS, ONE_STALL_MS):
            raise SelfTestFailed(f"the UI thread was blocked during training for {blocks} ms (limit: "
                                 f"{MAX_LAG_MS} ms, or a single stall under {ONE_STALL_MS} ms)")

    def _check_results(self) -> None:
        """The confusion matrix counts every validation example; a typed sentence is classified."""
        window, data, results = self.window, self.window.data_page, self.window.results_page
        window.show_page(results)
        wait_until(window, lambda: results.confusion is not None, 180, "compute the confusion matrix")
        counted = sum(map(sum, results.confusion.matrix))
        if counted != data.summary.validation_rows:
            raise SelfTestFailed(f"the confusion matrix counts {counted} examples, not {data.summary.validation_rows}")
        results.try_edit.setText(SENTENCE)
        results.try_button.click()
        wait_until(window, lambda: results.prediction is not None, 60, "classify a sentence")
        self.log(f"results: confusion matrix {results.confusion.matrix}; {SENTENCE!r} -> {results.prediction.label}")

    def _export(self, exports: Path) -> None:
        window, results = self.window, self.window.results_page
        results.export_vector(exports / "sst2-slash")
        wait_until(window, lambda: not results.busy, 60, "export the vector file")
        vector_files = [exports / "sst2-slash.safetensors", exports / "sst2-slash.json"]
        if not all(path.is_file() for path in vector_files):
            raise SelfTestFailed(f"the vector export is missing files: {[p.name for p in vector_files]}")
        results.export_merged(exports / "merged", results.forms[0])  # cls pooling: the stock classifier
        wait_until(window, lambda: not results.busy, 120, "export the merged model")
        if not (exports / "merged" / "config.json").is_file():
            raise SelfTestFailed("the merged export wrote no config.json")
        self.log("exported the vector file and the merged model")

    def _reload_merged_model(self, exports: Path) -> None:
        """Stock transformers loads the merged model and gives the app's probabilities for the same sentence."""
        window, results = self.window, self.window.results_page
        stock = []
        run_in_background(window, predict_with_stock_model, exports / "merged", [SENTENCE], on_result=stock.append,
                          on_error=lambda failure: stock.append(failure))
        wait_until(window, lambda: bool(stock), 120, "reload the merged model with transformers")
        if not isinstance(stock[0], list):
            raise SelfTestFailed(f"stock transformers cannot use the merged model: {stock[0].message}")
        expected = results.prediction.probabilities
        difference = max(abs(stock[0][0][name] - expected[name]) for name in expected)
        if difference > PROBABILITY_TOLERANCE:
            raise SelfTestFailed(f"the merged model's probabilities {stock[0][0]} differ from the app's {expected}")
        self.log(f"stock AutoModelForSequenceClassification predicts {stock[0][0]} (app: max difference "
                 f"{difference:.1e})")
