"""Page 5: how well a run did (metrics, confusion matrix, curves), trying it on a sentence, and exporting it."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .. import dialogs
from .. import settings as keys
from ..audit_box import PrivacyCheckBox
from ..backend import (
    Confusion,
    MergedForm,
    Prediction,
    RunSummary,
    TrainedModel,
    copy_vector,
    read_run,
    samples_by_step,
)
from ..chat import ChatBox, SamplesView
from ..entities import highlighted_html, legend_html, per_type_table, run_types
from ..plots import HISTORY_PLOTS, CurvePanel
from ..settings import AppSettings
from ..worker import LatestRequest, run_in_background
from .base import Note, Page

# metrics.json keys shown, in order, with how to print them
METRIC_ROWS = (
    ("entity_f1", "Validation entity F1", "{:.4f}"), ("entity_precision", "Validation entity precision", "{:.4f}"),
    ("entity_recall", "Validation entity recall", "{:.4f}"), ("token_accuracy", "Validation token accuracy", "{:.4f}"),
    ("accuracy", "Validation accuracy", "{:.4f}"), ("macro_f1", "Validation macro-F1", "{:.4f}"),
    ("matthews", "Validation Matthews corr.", "{:.4f}"), ("pearson", "Validation Pearson", "{:.4f}"),
    ("spearman", "Validation Spearman", "{:.4f}"), ("mse", "Validation mean squared error", "{:.4f}"),
    ("loss", "Validation loss", "{:.4f}"), ("perplexity", "Validation perplexity", "{:,.2f}"),
    ("trainable_params", "Trainable parameters", "{:,}"),
    ("trainable_params_without_head", "… without the head", "{:,}"), ("size", "Size (d, rank or prompts)", "{:,}"),
    ("position", "SLaSh position", "{}"), ("pooling", "Pooling", "{}"), ("train_steps", "Steps", "{:,}"),
    ("best_step", "Best step", "{:,}"), ("lr", "Learning rate", "{:g}"),
    ("step_time_s", "Median step time", "{:.3f} s"), ("examples_per_s", "Throughput", "{:,.1f} examples/s"),
    ("peak_memory_mb", "Peak memory", "{:,.0f} MB"), ("device", "Device", "{}"),
    ("train_examples", "Training examples", "{:,}"), ("audit_canaries_trained", "… of which audit canaries", "{:,}"),
    ("validation_examples", "Validation examples", "{:,}"),
    ("validation_source", "Validation data", "{}"), ("train_time_s", "Training time", "{:,.1f} s"),
    ("eval_time_s", "Evaluation time", "{:,.1f} s"), ("wall_time_s", "Wall time", "{:,.1f} s"),
    ("precision", "Precision", "{}"), ("padded_share", "Padding in the batches", "{:.1%}"),
)


CELL_WIDTH = (40, 96)  # a confusion-matrix column's least width and most width for its name, in pixels
SHARES_UP_TO = 8  # classes whose confusion matrix shows each cell's share of its row under the count


def _read_only_table(rows: int, columns: int) -> QTableWidget:
    table = QTableWidget(rows, columns)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    return table


class ResultsPage(Page):
    resume_requested = Signal(str)

    def __init__(self, settings: AppSettings, parent: QWidget | None = None):
        super().__init__("Results", "How the run did on its validation data. Try it on your own sentence, then "
                                    "export it: a small vector file, or a merged model that a stock library runs "
                                    "(transformers, sentence-transformers or ONNX Runtime).", parent=parent)
        self.settings = settings
        self.run: RunSummary | None = None
        self.trained: TrainedModel | None = None
        self.confusion: Confusion | None = None
        self.prediction: Prediction | None = None
        self.merge_problem = ""
        self.forms: tuple[MergedForm, ...] = ()  # the merged-model forms this run can be saved in
        self.busy_with: set[str] = set()  # background work in flight: 'load', 'confusion', 'predict', 'export'
        self.asked = ""  # the sentence last tried

        self._build_header()
        self.tabs = QTabWidget()
        self.body.addWidget(self.tabs, 1)
        self._build_summary_tab()
        self._build_curve_tabs()
        self._connect_signals()
        self._opener = LatestRequest(self, read_run, self._show_run,
                                     lambda failure: self.status.show_text(failure.message, "error"))
        self._show_controls()

    def _build_header(self) -> None:
        """The run's name with the export and resume buttons, and the status line under them."""
        header = QHBoxLayout()
        self.run_label = QLabel("No run open yet: train one, or open one from History.")
        self.run_label.setObjectName("runTitle")
        self.run_label.setWordWrap(True)
        header.addWidget(self.run_label, 1)
        self.vector_button = QPushButton("Save vector file…")
        self.merged_button = QPushButton("Save merged model…")
        self.merged_menu = QMenu(self.merged_button)
        self.merged_menu.setObjectName("mergedForms")
        self.resume_button = QPushButton("Resume this run")
        for button in (self.vector_button, self.merged_button, self.resume_button):
            header.addWidget(button)
        self.body.addLayout(header)
        self.status = Note()
        self.body.addWidget(self.status)

    def _build_summary_tab(self) -> None:
        """Metrics on the left; the confusion matrix (or the per-type entity scores) and the try-it box on the
        right, or, for a generate run, the chat across both."""
        summary = QWidget()
        grid = QGridLayout(summary)
        self.tabs.addTab(summary, "Summary")
        grid.addWidget(self._build_metrics_box(), 0, 0, 2, 1)
        grid.addWidget(self._build_confusion_box(), 0, 1)
        self.entity_box = QGroupBox("Entities by type (validation data, scored as seqeval scores them)")
        self.entity_box.setLayout(QVBoxLayout())
        self.entity_box.hide()  # a tagging run's per-type scores, in place of the confusion matrix
        grid.addWidget(self.entity_box, 0, 1)
        grid.addWidget(self._build_try_box(), 1, 1)
        grid.addWidget(self._build_chat_box(), 0, 1, 2, 1)
        self.privacy_check = PrivacyCheckBox()  # what the model gives away about its training data (an audit)
        grid.addWidget(self.privacy_check, 2, 0, 1, 2)
        self.summary_grid = grid
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        grid.setRowStretch(0, 2)  # the confusion matrix takes most of the height (it scrolls past a dozen classes)
        grid.setRowStretch(1, 1)

    def _build_metrics_box(self) -> QGroupBox:
        metrics_box = QGroupBox("Metrics")
        box = QVBoxLayout(metrics_box)
        self.metrics_table = _read_only_table(0, 2)
        self.metrics_table.setObjectName("metrics")
        self.metrics_table.horizontalHeader().hide()
        self.metrics_table.verticalHeader().hide()
        self.metrics_table.verticalHeader().setDefaultSectionSize(22)
        self.metrics_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.metrics_table.horizontalHeader().setStretchLastSection(True)
        box.addWidget(self.metrics_table)
        return metrics_box

    def _build_confusion_box(self) -> QGroupBox:
        confusion_box = QGroupBox("Confusion matrix (rows: true label, columns: predicted)")
        box = QVBoxLayout(confusion_box)
        self.confusion_table = _read_only_table(0, 0)
        self.confusion_table.setObjectName("confusion")
        self.confusion_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.confusion_table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        box.addWidget(self.confusion_table, 1)
        self.confusion_note = QLabel("")
        self.confusion_note.setObjectName("detail")
        self.confusion_note.setWordWrap(True)
        box.addWidget(self.confusion_note)
        self.confusion_box = confusion_box
        return confusion_box

    def _build_try_box(self) -> QGroupBox:
        """A sentence (or a pair) to classify, the answer, and a bar per class."""
        try_box = QGroupBox("Try it")
        form = QGridLayout(try_box)
        self.try_edit = QLineEdit()
        self.try_edit.setPlaceholderText("Type a sentence and press Enter")
        self.try_pair_edit = QLineEdit()
        self.try_pair_edit.setPlaceholderText("Second sentence of the pair")
        self.try_button = QPushButton("Classify")
        form.addWidget(self.try_edit, 0, 0)
        form.addWidget(self.try_button, 0, 1)
        form.addWidget(self.try_pair_edit, 1, 0)
        self.answer_label = QLabel("")
        self.answer_label.setObjectName("answer")
        form.addWidget(self.answer_label, 2, 0, 1, 2)
        self.bars = QVBoxLayout()
        form.addLayout(self.bars, 3, 0, 1, 2)
        form.setRowStretch(4, 1)
        self.try_box = try_box
        return try_box

    def _build_chat_box(self) -> QGroupBox:
        self.chat_box = QGroupBox("Chat with the tuned model")  # a generate run's, in place of the two boxes above
        self.chat_box.setObjectName("chatBox")
        box = QVBoxLayout(self.chat_box)
        self.chat = ChatBox()
        box.addWidget(self.chat)
        self.chat_box.hide()
        return self.chat_box

    def _build_curve_tabs(self) -> None:
        """The training curves, and a generate run's sample answers (that tab shows only for such a run)."""
        self.curves = CurvePanel(HISTORY_PLOTS, columns=3)
        self.tabs.addTab(self.curves, "Training curves")
        self.samples = SamplesView()  # a generate run's answers to its validation prompts at each evaluation
        self.samples_tab = self.tabs.addTab(self.samples, "Samples")
        self.tabs.setTabVisible(self.samples_tab, False)

    def _connect_signals(self) -> None:
        self.vector_button.clicked.connect(self._ask_vector_target)
        self.merged_button.clicked.connect(self.offer_merged_forms)
        self.resume_button.clicked.connect(lambda: self.resume_requested.emit(str(self.run.path)))
        self.try_button.clicked.connect(self.try_text)
        self.try_edit.returnPressed.connect(self.try_text)
        self.try_pair_edit.returnPressed.connect(self.try_text)

    # --- opening a run ------------------------------------------------------------------------------------
    def open_run(self, run_dir: str | Path) -> None:
        """Show a run folder (read in the background); a finished run's model loads after that."""
        self.run, self.trained, self.confusion, self.prediction, self.merge_problem = None, None, None, None, ""
        self.forms = ()
        self.busy_with.clear()
        self.run_label.setText(f"Opening {Path(run_dir).name}…")
        self.metrics_table.setRowCount(0)
        self.confusion_table.setRowCount(0)
        self.confusion_table.setColumnCount(0)
        self.confusion_note.setText("")
        self.answer_label.setText("")
        self._clear_bars()
        self.curves.clear()
        self.samples.clear_samples()
        self.chat.set_model(None, "", "Loading the trained model…")
        self.privacy_check.set_run(None)
        self._show_generation(False)
        self.status.show_text("")
        self._show_controls()
        self._opener.request(Path(run_dir))

    def _show_run(self, answer) -> None:
        run_dir, run, history = answer
        self.run = run
        if run is None:
            self.run_label.setText(f"{run_dir.name} holds no run.")
            self._show_controls()
            return
        metric = f" · {run.metric_name} {run.metric:.4f}" if run.metric is not None else ""
        self.run_label.setText(f"<b>{run.name}</b><br>{run.method} on {run.data} · {run.status}{metric}")
        self._fill_metrics(run.metrics)
        self._show_entity_scores(run.metrics.get("per_type"))
        self.curves.set_history(run.name, history, run.metric_name)
        samples = samples_by_step(history)
        self.samples.set_samples(samples)
        self._show_generation(bool(samples))  # a generate run (its evaluations answered prompts): a chat box
        self.privacy_check.set_run(run.path if run.has_vector else None)
        if run.has_vector:
            self.status.show_text("Loading the trained model…")
            self._start("load", TrainedModel, run.path, on_result=self._model_loaded)
        elif run.resumable:
            self.status.show_text(f"This run stopped after {run.steps} steps; resume it to finish training "
                                  "and get its vector file.", "warning")
        else:
            self.status.show_text("This run did not get far enough to save anything usable.", "warning")
        self._show_controls()

    def close_run(self, run_dir: str | Path) -> None:
        """Forget the run if it is the one shown (it was deleted)."""
        if self.run is not None and self.run.path == Path(run_dir):
            self.open_run(run_dir)

    def _fill_metrics(self, metrics: dict) -> None:
        rows = [(label, template.format(metrics[key])) for key, label, template in METRIC_ROWS
                if metrics.get(key) is not None]
        privacy = metrics.get("privacy")
        if privacy:
            target = privacy["epsilon_target"]
            rows += [("Privacy: ε spent", f"{privacy['epsilon_spent']:.3f}"
                      + (f" (budget {target:g})" if target is not None else "")),
                     ("Privacy: δ", f"{privacy['delta']:.2g}"),
                     ("Privacy: noise σ, clipping C",
                      f"{privacy['noise_multiplier']:.3g}, {privacy['max_grad_norm']:g}")]
        self.metrics_table.setRowCount(len(rows))
        for row, (label, value) in enumerate(rows):
            self.metrics_table.setItem(row, 0, QTableWidgetItem(label))
            self.metrics_table.setItem(row, 1, QTableWidgetItem(value))
            self.metrics_table.item(row, 1).setToolTip(value)

    def _model_loaded(self, trained: TrainedModel) -> None:
        self.trained = trained
        self.forms = trained.merged_forms()
        self.merge_problem = trained.merge_problem()
        self.try_pair_edit.setVisible(bool(trained.metadata["columns"].get("text_pair")))
        self.status.show_text(self.merge_problem, "info")
        self._show_generation(trained.generates)
        if trained.generates:
            self.chat.set_model(trained, self.run.method)
            return
        tagging = not self.entity_box.isHidden()
        self.try_button.setText("Find entities" if tagging else "Classify")
        if tagging:
            return
        self.confusion_note.setText("Computing on the validation data…")
        self._start("confusion", trained.confusion, on_result=self._show_confusion)

    def _show_generation(self, generates: bool) -> None:
        """A generate run: the chat box and the samples tab, in place of the confusion matrix and the try-it box."""
        self.chat_box.setVisible(generates)
        self.try_box.setVisible(not generates)
        self.tabs.setTabVisible(self.samples_tab, generates)
        if generates:
            self.confusion_box.hide()
            self.entity_box.hide()
        elif self.entity_box.isHidden():
            self.confusion_box.show()
        self.summary_grid.setColumnStretch(1, 2 if generates else 1)

    def _show_entity_scores(self, per_type: dict | None) -> None:
        """A tagging run's precision, recall and F1 per entity type (from metrics.json), instead of a confusion
        matrix."""
        layout = self.entity_box.layout()
        while layout.count():
            layout.takeAt(0).widget().deleteLater()
        self.confusion_box.setVisible(per_type is None)
        self.entity_box.setVisible(per_type is not None)
        if per_type is not None:
            layout.addWidget(per_type_table(per_type, run_types(per_type)))

    def _show_confusion(self, confusion: Confusion | None) -> None:
        self.confusion = confusion
        if confusion is None:
            self.confusion_note.setText("This is a regression task: there are no classes to confuse.")
            return
        names = list(confusion.label_names)
        table = self.confusion_table
        table.setRowCount(len(names))
        table.setColumnCount(len(names))
        fonts = table.fontMetrics()
        # Each column is as wide as its widest count and its name (within CELL_WIDTH), and the table scrolls once
        # they do not all fit: never an elided count
        counts = max(fonts.horizontalAdvance(f"{count:,}") for row in confusion.matrix for count in row)
        label = min(max(fonts.horizontalAdvance(name) for name in names), CELL_WIDTH[1])
        table.horizontalHeader().setMinimumSectionSize(max(CELL_WIDTH[0], counts, label) + 16)
        shares = len(names) <= SHARES_UP_TO  # each cell's share of its row, under the count; past that in its tooltip
        table.verticalHeader().setMinimumSectionSize((2 if shares else 1) * fonts.height() + 6)
        for index, name in enumerate(names):
            for set_header in (table.setHorizontalHeaderItem, table.setVerticalHeaderItem):
                header = QTableWidgetItem(fonts.elidedText(name, Qt.TextElideMode.ElideRight, CELL_WIDTH[1]))
                header.setToolTip(name)
                set_header(index, header)
        for row, counts in enumerate(confusion.matrix):
            total = max(1, sum(counts))
            for column, count in enumerate(counts):
                item = QTableWidgetItem(f"{count:,}\n{100 * count / total:.0f}%" if shares else f"{count:,}")
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                item.setToolTip(f"true {names[row]}, predicted {names[column]}: {count:,} "
                                f"({100 * count / total:.1f}% of the row)")
                share = count / total
                color = QColor(46, 125, 50) if row == column else QColor(198, 40, 40)
                color.setAlphaF(0.12 + 0.6 * share)
                item.setBackground(color)
                table.setItem(row, column, item)
        total = sum(map(sum, confusion.matrix))
        self.confusion_note.setText(f"{total:,} validation examples, accuracy {confusion.accuracy:.4f}. Each row "
                                    "shows how the examples of one true label were classified.")

    # --- try it -------------------------------------------------------------------------------------------
    def try_text(self) -> None:
        text = self.try_edit.text().strip()
        if not text or self.trained is None:
            return
        pair = self.try_pair_edit.text().strip() if not self.try_pair_edit.isHidden() else None
        self.answer_label.setText("…")
        self.asked = text
        self._start("predict", self.trained.predict, text, pair, on_result=self._show_prediction)

    def _show_prediction(self, prediction: Prediction) -> None:
        self.prediction = prediction
        self._clear_bars()
        if prediction.entities is not None:
            kinds = run_types(self.run.metrics.get("per_type") or {}, self.trained.metadata["label_names"])
            self.answer_label.setWordWrap(True)
            found = f"{len(prediction.entities)} entit{'y' if len(prediction.entities) == 1 else 'ies'}"
            self.answer_label.setText(f"{highlighted_html(self.asked, prediction.entities, kinds)}"
                                      f"<span style='color:gray'>{found} · types: </span>{legend_html(kinds)}")
            return
        if prediction.label is None:
            self.answer_label.setText(f"Predicted value: <b>{prediction.value:.4f}</b>")
            return
        self.answer_label.setText(f"Predicted label: <b>{prediction.label}</b>")
        for name, probability in sorted(prediction.probabilities.items(), key=lambda item: -item[1]):
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(round(1000 * probability))
            bar.setFormat(f"{name}: {100 * probability:.1f}%")
            self.bars.addWidget(bar)

    def _clear_bars(self) -> None:
        while self.bars.count():
            self.bars.takeAt(0).widget().deleteLater()

    # --- export -------------------------------------------------------------------------------------------
    def _ask_vector_target(self) -> None:
        suggested = str(Path(self.settings.folder(keys.EXPORT_FOLDER)) / f"{self.run.name}.safetensors")
        target = dialogs.choose_save_file(self, "Save the vector file", suggested, "Vector files (*.safetensors)")
        if target:
            self.settings.remember_folder(keys.EXPORT_FOLDER, target)
            self.export_vector(Path(target))

    def export_vector(self, target: Path) -> None:
        """Copy vector.safetensors and vector.json to `target` (.safetensors and .json beside each other)."""
        self._start("export", copy_vector, self.run.path, target, on_result=self._vector_saved)

    def _vector_saved(self, files) -> None:
        self.status.show_text(f"Saved {files[0]} and {', '.join(file.name for file in files[1:])}.")

    def offer_merged_forms(self) -> None:
        """A menu under the button: each form this run can be saved in, with a line on who loads it."""
        self.merged_menu.clear()
        for form in self.forms:
            self.merged_menu.addAction(form.title).triggered.connect(
                lambda _checked=False, form=form: self.ask_merged_target(form))
            self.merged_menu.addAction(f"    {form.loads_with}").setEnabled(False)  # a caption, not a choice
        corner = self.merged_button.mapToGlobal(self.merged_button.rect().bottomRight())
        # under the button, right-aligned
        self.merged_menu.popup(corner - QPoint(self.merged_menu.sizeHint().width(), 0))

    def ask_merged_target(self, form: MergedForm) -> None:
        suggested = str(Path(self.settings.folder(keys.EXPORT_FOLDER)) / f"{self.run.name}-{form.name}")
        target = dialogs.choose_save_file(self, f"Save the {form.title.lower()} as a new folder", suggested,
                                          "Folders (*)")
        if target:
            self.settings.remember_folder(keys.EXPORT_FOLDER, str(Path(target).parent))
            self.export_merged(Path(target), form)

    def export_merged(self, target: Path, form: MergedForm) -> None:
        """Write the merged model in `form` (in the background: it copies the whole model)."""
        self.status.show_text(f"Writing the {form.title.lower()} to {target}…")
        self._start("export", self.trained.export_merged, target, form.name,
                    on_result=lambda folder: self.status.show_text(
                        f"Saved the {form.title.lower()} to {folder}: {form.loads_with}."))

    # --- background work ----------------------------------------------------------------------------------
    def _start(self, task: str, function, *args, on_result) -> None:
        run = self.run
        self.busy_with.add(task)
        self._show_controls()

        def done(value):
            if self.run is run:  # answers for a run no longer shown are dropped
                self.busy_with.discard(task)
                on_result(value)
                self._show_controls()

        def failed(failure):
            if self.run is run:
                self.busy_with.discard(task)
                self.status.show_text(failure.message, "error")
                dialogs.show_failure(self, failure, {"load": "load the trained model", "confusion": "evaluate",
                                                     "predict": "classify", "export": "export"}[task])
                self._show_controls()

        run_in_background(self, function, *args, on_result=done, on_error=failed)

    def _show_controls(self) -> None:
        run = self.run
        ready = self.trained is not None
        exporting = "export" in self.busy_with
        self.vector_button.setEnabled(run is not None and run.has_vector and not exporting)
        self.merged_button.setEnabled(ready and bool(self.forms) and not exporting)
        self.merged_button.setToolTip(self.merge_problem or "Folds the method into the weights; in the forms that "
                                      "fit this run: " + ", ".join(form.title for form in self.forms))
        self.resume_button.setVisible(run is not None and run.resumable)
        self.try_button.setEnabled(ready and "predict" not in self.busy_with)
        self.try_edit.setEnabled(ready)
        self.try_pair_edit.setEnabled(ready)
        if not ready:
            self.try_pair_edit.setVisible(False)

    @property
    def busy(self) -> bool:
        return bool(self.busy_with) or self._opener.busy or self.chat.busy or self.privacy_check.busy
