"""Page 2: the labelled text to learn from, its columns, and what is held out for validation."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from ...core.config import DataSpec, field_bounds, field_help
from ...core.paths import sample_data_dir
from .. import dialogs
from .. import settings as keys
from ..backend import (
    PREVIEW_ROWS,
    DataSummary,
    Preview,
    data_file_suffixes,
    preview_table,
    summarize_data,
    task_catalog,
)
from ..entities import tagged_html
from ..settings import AppSettings
from ..worker import LatestRequest, run_in_background
from .base import Note, Page, compact_form, thousands, valid_range, with_help

NO_PAIR = "(none: single texts)"
SUMMARY_DELAY_MS = 250  # typing or spinning settles before the data is reloaded
MAX_DISTRIBUTION_ROWS = 12  # more classes scroll


def file_filter() -> str:
    return f"Data files ({' '.join('*' + suffix for suffix in data_file_suffixes())});;All files (*)"


def sample_files() -> tuple[Path, Path]:
    """The bundled SST-2 slice: training sentences and the GLUE dev set."""
    return sample_data_dir() / "sst2_train.tsv", sample_data_dir() / "sst2_dev.tsv"


class RowsModel(QAbstractTableModel):
    """A read-only table of strings (the preview)."""

    def __init__(self, preview: Preview | None = None):
        super().__init__()
        self.preview = preview

    def rowCount(self, parent: QModelIndex | None = None) -> int:
        return len(self.preview.rows) if self.preview and not (parent and parent.isValid()) else 0

    def columnCount(self, parent: QModelIndex | None = None) -> int:
        return len(self.preview.columns) if self.preview and not (parent and parent.isValid()) else 0

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole) and index.isValid():
            return self.preview.rows[index.row()][index.column()]
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole or self.preview is None:  # Qt asks an empty table too
            return None
        return self.preview.columns[section] if orientation == Qt.Orientation.Horizontal else str(section + 1)


class DataPage(Page):
    changed = Signal()  # the data, its columns or the validation choice changed (a new summary follows)
    summary_changed = Signal()  # a summary (or an error) arrived

    def __init__(self, settings: AppSettings, parent: QWidget | None = None):
        super().__init__("Data", "A table of labelled texts: a CSV, TSV, JSON, JSON Lines or Parquet file with a "
                                 "text column and a label column; or words with their tags (named entities): a "
                                 "CoNLL file, or token-list and tag-list columns; or instructions, chats or plain "
                                 "text to teach a decoder (Alpaca JSON, messages / ShareGPT JSON Lines, .txt). Drop "
                                 "a file here or choose one.",
                         parent=parent)
        self.settings = settings
        self.preview: Preview | None = None
        self.summary: DataSummary | None = None
        self.error = ""
        self._preview_request = LatestRequest(self, preview_table, self._show_preview, self._show_failure)
        self._summary_request = LatestRequest(self, summarize_data, self._show_summary, self._show_failure)
        self._summary_timer = QTimer(self, singleShot=True, interval=SUMMARY_DELAY_MS)
        self._summary_timer.timeout.connect(self._request_summary)
        self.setAcceptDrops(True)

        left, right = self._build_column_layouts()
        left.addWidget(self._build_source_group())
        left.addWidget(self._build_fill_group())
        left.addWidget(self._build_validation_group())
        left.addWidget(self._build_column_choices())
        right.addWidget(self._build_summary_group())
        self.body.addWidget(self._build_preview_group(), 1)
        self._connect_settings_signals()

    def _build_column_layouts(self) -> tuple[QVBoxLayout, QVBoxLayout]:
        """The choices on the left, what training will see on the right (the preview spans both below)."""
        columns = QHBoxLayout()
        left, right = QVBoxLayout(), QVBoxLayout()
        columns.addLayout(left, 3)
        columns.addLayout(right, 2)
        self.body.addLayout(columns)
        return left, right

    def _build_source_group(self) -> QGroupBox:
        """The training file (or the bundled sample) and the task."""
        source = QGroupBox("Training data")
        grid = QGridLayout(source)
        self.sample_button = QPushButton("Use the bundled SST-2 sample")
        self.sample_button.setObjectName("primary")
        self.sample_button.clicked.connect(self.use_sample)
        grid.addWidget(self.sample_button, 0, 0)
        sample_note = QLabel("4,000 movie-review phrases (0 = negative, 1 = positive), validated on the "
                             "872-sentence GLUE SST-2 dev set.")
        sample_note.setObjectName("detail")
        sample_note.setWordWrap(True)
        grid.addWidget(sample_note, 0, 1, 1, 2)
        self.train_edit = with_help(QLineEdit(), DataSpec, "train")
        self.train_edit.setPlaceholderText("a file, a folder, or a datasets name — or drop a file on this page")
        self.train_edit.editingFinished.connect(lambda: self.set_train(self.train_edit.text().strip()))
        self.browse_train_button = QPushButton("Browse…")
        self.browse_train_button.clicked.connect(self._browse_train)
        grid.addWidget(QLabel("File:"), 1, 0)
        grid.addWidget(self.train_edit, 1, 1)
        grid.addWidget(self.browse_train_button, 1, 2)
        self.task_combo = with_help(QComboBox(), DataSpec, "task")
        self.task_combo.addItem("auto: guessed from the data", DataSpec().task)  # the tasks follow once they load
        self.task_combo.currentIndexChanged.connect(self._task_changed)
        grid.addWidget(QLabel("Task:"), 2, 0)
        grid.addWidget(self.task_combo, 2, 1, 1, 2)
        grid.setColumnStretch(1, 1)
        return source

    def _build_fill_group(self) -> QGroupBox:
        """A value for each placeholder in the data (hidden until the data has some)."""
        self.fill_box = QGroupBox("Placeholders to fill in")
        self.fill_box.setToolTip("The data holds placeholders such as {{name}}; every one is replaced by the value "
                                 "you give here before training (the command line's --fill name=value).")
        self.fill_form = compact_form(self.fill_box)
        fill_note = QLabel("The answers mention these; give each the value the model should learn.")
        fill_note.setObjectName("detail")
        fill_note.setWordWrap(True)
        self.fill_form.addRow(fill_note)
        self.fill_edits: dict[str, QLineEdit] = {}  # placeholder name -> its value box
        self.fill_box.hide()
        return self.fill_box

    def _build_validation_group(self) -> QGroupBox:
        """A share of the training rows held out, or a validation file."""
        validation = QGroupBox("Validation")
        validation.setToolTip("The validation data scores the model during training and picks the best checkpoint.")
        grid = QGridLayout(validation)
        self.validation_kinds = QButtonGroup(self)
        self.split_radio = with_help(QRadioButton("Hold out a share of the training rows:"), DataSpec,
                                     "validation_fraction")
        self.file_radio = with_help(QRadioButton("Use a validation file:"), DataSpec, "validation")
        self.split_radio.setChecked(True)
        for radio in (self.split_radio, self.file_radio):
            self.validation_kinds.addButton(radio)
        self.fraction_spin = with_help(QDoubleSpinBox(), DataSpec, "validation_fraction")
        self.fraction_spin.setDecimals(0)
        low, high = field_bounds(DataSpec, "validation_fraction", 0.01)  # shown in percent, at most half
        self.fraction_spin.setRange(round(low * 100), min(50, round(high * 100)))
        self.fraction_spin.setSuffix(" %")
        self.fraction_spin.setValue(DataSpec().validation_fraction * 100)
        self.fraction_spin.setMaximumWidth(90)
        self.validation_edit = with_help(QLineEdit(), DataSpec, "validation")
        self.validation_edit.setPlaceholderText("same columns as the training file")
        self.validation_edit.editingFinished.connect(self._validation_edited)
        self.browse_validation_button = QPushButton("Browse…")
        self.browse_validation_button.clicked.connect(self._browse_validation)
        grid.addWidget(self.split_radio, 0, 0)
        grid.addWidget(self.fraction_spin, 0, 1)
        grid.addWidget(self.file_radio, 1, 0)
        grid.addWidget(self.validation_edit, 1, 1)
        grid.addWidget(self.browse_validation_button, 1, 2)
        grid.setColumnStretch(1, 1)
        return validation

    def _build_column_choices(self) -> QGroupBox:
        """Which columns hold the text, the second text and the label, and how many rows to use."""
        chosen = QGroupBox("Columns")
        form = compact_form(chosen)
        guessed_note = QLabel("Guessed from the names and contents; change them if the guess is wrong.")
        guessed_note.setObjectName("detail")
        guessed_note.setWordWrap(True)
        form.addRow(guessed_note)
        self.text_combo = with_help(QComboBox(), DataSpec, "text_column")
        self.pair_combo = with_help(QComboBox(), DataSpec, "text_pair_column")
        self.label_combo = with_help(QComboBox(), DataSpec, "label_column")
        for combo in (self.text_combo, self.pair_combo, self.label_combo):  # wide enough for long column names
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
            combo.setMinimumContentsLength(18)
        self.rows_spin = self._row_limit_spin("max_train_rows")
        self.validation_rows_spin = self._row_limit_spin("max_validation_rows")
        self.column_form = form
        form.addRow("Text", self.text_combo)
        form.addRow("Second text (sentence pairs)", self.pair_combo)
        form.addRow("Label", self.label_combo)
        form.addRow("Train on at most", self.rows_spin)
        form.addRow("Score on at most", self.validation_rows_spin)
        return chosen

    def _build_summary_group(self) -> QGroupBox:
        """The summary of the data as read, and its labels' distribution."""
        summary = QGroupBox("What training will see")
        box = QVBoxLayout(summary)
        self.summary_label = QLabel("Choose a file to see its labels.")
        self.summary_label.setObjectName("summary")
        self.summary_label.setWordWrap(True)
        box.addWidget(self.summary_label)
        self.distribution = QTableWidget(0, 4)
        self.distribution.setObjectName("distribution")
        self.distribution.setHorizontalHeaderLabels(["Label", "Training", "Share", "Validation"])
        self.distribution.verticalHeader().setDefaultSectionSize(24)
        self.distribution.verticalHeader().hide()
        self.distribution.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.distribution.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.distribution.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        box.addWidget(self.distribution)
        self.status = Note()
        box.addWidget(self.status)
        box.addStretch(1)
        return summary

    def _build_preview_group(self) -> QGroupBox:
        """The first rows as a table, or (token data) the words with their entities coloured."""
        preview = QGroupBox(f"Preview (the first {PREVIEW_ROWS} rows)")
        box = QVBoxLayout(preview)
        self.preview_view = QTableView()
        self.preview_view.setObjectName("preview")
        self.preview_view.setModel(RowsModel())
        self.preview_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.preview_view.horizontalHeader().setStretchLastSection(True)
        self.preview_view.verticalHeader().setDefaultSectionSize(22)
        box.addWidget(self.preview_view)
        self.token_preview = QTextBrowser()  # token data: the words, entities in their type's colour with their tag
        self.token_preview.setObjectName("tokenPreview")
        self.token_preview.hide()
        box.addWidget(self.token_preview)
        return preview

    def _connect_settings_signals(self) -> None:
        """Any change to the columns, the row limits or the validation choice asks for a new summary."""
        for combo in (self.text_combo, self.pair_combo, self.label_combo):
            combo.currentIndexChanged.connect(self._settings_changed)
        self.fraction_spin.valueChanged.connect(self._settings_changed)
        self.rows_spin.valueChanged.connect(self._settings_changed)
        self.validation_rows_spin.valueChanged.connect(self._settings_changed)
        self.split_radio.toggled.connect(self._settings_changed)

    def load(self) -> None:
        """Reopen the remembered data (in the background; called once the window shows)."""
        run_in_background(self, task_catalog, on_result=self._show_tasks)
        remembered = self.settings.text(keys.TRAIN_DATA)
        if remembered:
            self.set_validation(self.settings.text(keys.VALIDATION_DATA))
            self.set_train(remembered)

    # --- what the rest of the app reads -------------------------------------------------------------------
    def data_spec(self) -> DataSpec:
        validation = self.validation_edit.text().strip() if self.file_radio.isChecked() else ""
        guessed = self.preview.guessed[0] if self.preview is not None and self.preview.guessed else None
        text = self.text_combo.currentText() or None
        return DataSpec(
            task=self.task_combo.currentData(),
            train=self.train_edit.text().strip(), validation=validation or None,
            # the guessed text column is the core's own guess: named only when changed (a generate task reads a
            # named column as plain text, not as the instructions of its layout)
            text_column=text if text != guessed else None,
            text_pair_column=self.pair_combo.currentText() if self.pair_combo.currentIndex() > 0 else None,
            label_column=self.label_combo.currentText() or None,
            validation_fraction=self.fraction_spin.value() / 100,
            max_train_rows=self.rows_spin.value() or None,
            max_validation_rows=self.validation_rows_spin.value() or None,
            fill=tuple(f"{name}={edit.text()}" for name, edit in self.fill_edits.items() if edit.text().strip()),
        )

    def set_fill(self, name: str, value: str) -> None:
        """Type the value of the placeholder `name` (as a user would)."""
        self.fill_edits[name].setText(value)  # the summary reloads once typing settles

    @staticmethod
    def _row_limit_spin(name: str) -> QSpinBox:
        spin = valid_range(with_help(QSpinBox(), DataSpec, name), DataSpec, name, 100_000_000, "all rows")
        spin.setSingleStep(1000)
        return spin

    @property
    def busy(self) -> bool:
        return self._preview_request.busy or self._summary_request.busy or self._summary_timer.isActive()

    def short_name(self) -> str:
        return Path(self.train_edit.text().strip()).name or "no data"

    # --- choosing -----------------------------------------------------------------------------------------
    def use_sample(self) -> None:
        train, dev = sample_files()
        self.set_validation(str(dev))
        self.set_train(str(train))

    def set_train(self, source: str) -> None:
        self.train_edit.setText(source)
        self.settings.set_text(keys.TRAIN_DATA, source)
        self.preview = self.summary = None
        self._summary_timer.stop()
        self._summary_request.forget()
        self.preview_view.setModel(RowsModel())
        self._fill_columns(())
        self._show_summary(None)
        if not source:
            self._preview_request.forget()
            self.error = ""
            self.status.show_text("")
            self.changed.emit()
            return
        self.error = ""
        self.status.show_text("Reading the file…")
        self._preview_request.request(source, self.task_combo.currentData())
        self.changed.emit()

    def set_validation(self, source: str) -> None:
        """A validation file, or '' to hold out a share of the training rows instead."""
        self.validation_edit.setText(source)
        self.settings.set_text(keys.VALIDATION_DATA, source)
        (self.file_radio if source else self.split_radio).setChecked(True)
        self._settings_changed()

    def dragEnterEvent(self, event) -> None:
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        """The first file dropped is the training data; a second one, the validation data."""
        files = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if not files:
            return
        event.acceptProposedAction()
        self.settings.remember_folder(keys.DATA_FOLDER, files[0])
        if len(files) > 1:
            self.set_validation(files[1])
        self.set_train(files[0])

    def _browse_train(self) -> None:
        chosen = dialogs.choose_open_file(self, "Choose the training data", self.settings.folder(keys.DATA_FOLDER),
                                          file_filter())
        if chosen:
            self.settings.remember_folder(keys.DATA_FOLDER, chosen)
            self.set_train(chosen)

    def _browse_validation(self) -> None:
        chosen = dialogs.choose_open_file(self, "Choose the validation data", self.settings.folder(keys.DATA_FOLDER),
                                          file_filter())
        if chosen:
            self.settings.remember_folder(keys.DATA_FOLDER, chosen)
            self.set_validation(chosen)

    def _validation_edited(self) -> None:
        if self.validation_edit.text().strip() != self.settings.text(keys.VALIDATION_DATA):
            self.set_validation(self.validation_edit.text().strip())

    def choose_task(self, name: str) -> None:
        """Read the data for the task called `name` ('auto': the one that recognises it)."""
        self.task_combo.setCurrentIndex(max(0, self.task_combo.findData(name)))

    def _show_tasks(self, tasks) -> None:
        self.task_combo.blockSignals(True)
        for task in tasks:
            if self.task_combo.findData(task.name) < 0:
                self.task_combo.addItem(f"{task.name}: {task.summary.partition(':')[0]}", task.name)
                self.task_combo.setItemData(self.task_combo.count() - 1, task.summary, Qt.ItemDataRole.ToolTipRole)
        self.task_combo.blockSignals(False)

    def _task_changed(self) -> None:
        if self.train_edit.text().strip():
            self.set_train(self.train_edit.text().strip())

    def _show_placeholders(self, names) -> None:
        """One box per placeholder of the data (values kept for names seen before)."""
        kept = {name: edit.text() for name, edit in self.fill_edits.items()}
        for edit in self.fill_edits.values():
            self.fill_form.removeRow(edit)
        self.fill_edits = {}
        for name in names:
            edit = QLineEdit(kept.get(name, ""))
            edit.setObjectName(f"fill_{name}")
            edit.setPlaceholderText(f"the value of {{{{{name}}}}}")
            edit.setToolTip(f"Replaces every {{{{{name}}}}} in the data. {field_help(DataSpec, 'fill')}")
            edit.setMinimumWidth(220)
            edit.textChanged.connect(self._settings_changed)  # the summary reloads once typing settles
            self.fill_form.addRow("{{" + name + "}}", edit)
            self.fill_edits[name] = edit
        self.fill_box.setVisible(bool(names))

    def _settings_changed(self) -> None:
        if not self.file_radio.isChecked():
            self.settings.set_text(keys.VALIDATION_DATA, "")
        if self.preview is None:
            return
        self.summary = None
        self._summary_request.forget()
        self._summary_timer.start()
        self.changed.emit()

    # --- answers from the background ----------------------------------------------------------------------
    def _show_preview(self, preview: Preview) -> None:
        self.preview = preview
        self.preview_view.setModel(RowsModel(preview))
        self.preview_view.resizeColumnsToContents()
        self._show_roles(preview)
        self._show_placeholders(preview.placeholders)
        for column in range(len(preview.columns)):
            self.preview_view.setColumnWidth(column, min(self.preview_view.columnWidth(column), 600))
        self._fill_columns(preview.columns, preview.guessed)
        self.status.show_text("Checking the labels…")
        self._request_summary()

    def _fill_columns(self, columns, guessed=None) -> None:
        text, pair, label = guessed or (columns[0] if columns else "", None, columns[-1] if columns else "")
        text, label = text or "", label or ""  # a generate task's plain text has no answer column
        for combo, chosen, first in ((self.text_combo, text, ()), (self.pair_combo, pair or NO_PAIR, (NO_PAIR,)),
                                     (self.label_combo, label, ())):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([*first, *columns])
            combo.setCurrentText(chosen)
            combo.blockSignals(False)

    def _show_roles(self, preview: Preview) -> None:
        """The column lists named for the task the data is for; token data previewed as words with their tags."""
        text, pair, label = preview.roles
        for combo, role in ((self.text_combo, text), (self.pair_combo, pair), (self.label_combo, label)):
            self.column_form.setRowVisible(combo, role is not None)
            if role is not None:
                self.column_form.labelForField(combo).setText(role)
        self.distribution.setHorizontalHeaderItem(0, QTableWidgetItem(label))
        self.preview_view.setVisible(preview.tagged is None)
        self.token_preview.setVisible(preview.tagged is not None)
        self.token_preview.setHtml(tagged_html(preview.tagged) if preview.tagged is not None else "")

    def _request_summary(self) -> None:
        spec = self.data_spec()
        if self.file_radio.isChecked() and not spec.validation:
            self.status.show_text("Choose the validation file, or hold out a share of the training rows.", "warning")
            return
        self._summary_request.request(spec)

    def _show_summary(self, summary: DataSummary | None) -> None:
        self.summary = summary
        self.distribution.setRowCount(0)
        if summary is None:
            self.summary_label.setText("Choose a file to see its labels.")
            return
        self.error = ""
        self.summary_label.setText(
            f"<b>{summary.description}</b><br>{thousands(summary.train_rows)} training rows · "
            f"{thousands(summary.validation_rows)} validation rows<br>"
            f"<span style='color:gray'>Validation: {summary.validation_source}</span>")
        total = max(1, sum(summary.train_counts.values()))  # rows, or tagged words
        for row, (name, count) in enumerate(summary.train_counts.items()):
            self.distribution.insertRow(row)
            self.distribution.setItem(row, 0, QTableWidgetItem(name))
            self.distribution.setItem(row, 1, QTableWidgetItem(thousands(count)))
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(round(1000 * count / total))
            bar.setFormat(f"{100 * count / total:.1f}%")
            self.distribution.setCellWidget(row, 2, bar)
            self.distribution.setItem(row, 3, QTableWidgetItem(thousands(summary.validation_counts.get(name, 0))))
        self.distribution.setFixedHeight(self.distribution.horizontalHeader().height() + 4 +
                                         sum(self.distribution.rowHeight(row) for row in range(min(
                                             self.distribution.rowCount(), MAX_DISTRIBUTION_ROWS))))
        self.distribution.setVisible(bool(summary.train_counts))
        self.status.show_text("\n".join(summary.notes))
        self.summary_changed.emit()

    def _show_failure(self, failure) -> None:
        self.summary = None
        self.distribution.setRowCount(0)
        self.summary_label.setText("This data cannot be used as it is:")
        self.error = failure.message
        self.status.show_text(failure.message, "error")
        self.summary_changed.emit()
