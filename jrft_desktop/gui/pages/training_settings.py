"""How long and how to train: the TrainingSpec dataclass as a form (with the maximum length of the inputs)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLineEdit,
    QRadioButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.config import DEFAULT_PATIENCE, DataSpec, TrainingSpec, field_choices, field_help, setting_problem
from ...core.errors import UserError
from .base import Note, compact_form, valid_range, with_help

METRICS = ("auto", "accuracy", "macro_f1", "matthews", "pearson", "spearman")
PRECISION_LABELS = ("Automatic (bf16 where the CPU or GPU has it)", "fp32", "bf16")  # TrainingSpec's choices
BASE_DTYPE_LABELS = ("Automatic (bf16 when computing in bf16)", "fp32", "bf16")  # TrainingSpec.base_dtype's
# TrainingSpec.gradient_checkpointing: automatic (None), on, off
CHECKPOINTING_CHOICES = (("Automatic (on where the run needs it to fit, or its activations outgrow the model)", None),
                         ("On", True), ("Off", False))


def _spin(cls: type, name: str, ceiling: int | None, value: int, special: str = "") -> QSpinBox:
    """An integer box over the setting's valid range (up to `ceiling`), its help as tooltip; with `special`, one
    below the range reads as that word (meaning 'not set')."""
    spin = valid_range(QSpinBox(), cls, name, ceiling, special)
    spin.setValue(value)
    return with_help(spin, cls, name)


def _real(cls: type, name: str, ceiling: float | None, value: float, decimals: int, step: float) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setDecimals(decimals)
    valid_range(spin, cls, name, ceiling)
    spin.setSingleStep(step)
    spin.setValue(value)
    return with_help(spin, cls, name)


class TrainingSettings(QGroupBox):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Training settings", parent)
        defaults = TrainingSpec()
        self._default_lr = None
        box = QVBoxLayout(self)
        main = compact_form()
        box.addLayout(main)
        self._build_main_form(main, defaults)
        self._build_more_settings(box, defaults)
        self._connect_signals()

    def _build_main_form(self, main: QFormLayout, defaults: TrainingSpec) -> None:
        """The settings always shown: how long, in what batches, how fast, and on what."""
        self.converge_radio = with_help(QRadioButton("Until it stops improving, at most"), TrainingSpec,
                                        "max_epochs")
        self.ceiling_spin = _real(TrainingSpec, "max_epochs", 1000, defaults.max_epochs, 1, 1.0)
        self.ceiling_spin.setSuffix(" epochs")
        self.epochs_radio = with_help(QRadioButton("Epochs"), TrainingSpec, "epochs")
        self.steps_radio = with_help(QRadioButton("Steps"), TrainingSpec, "max_steps")
        self.epochs_spin = _real(TrainingSpec, "epochs", 1000, 3.0, 1, 0.5)
        self.steps_spin = _spin(TrainingSpec, "max_steps", 10_000_000, 500)
        self.converge_radio.setChecked(True)
        length = QGridLayout()  # two lines: on one, the three choices made the page scroll sideways at the window's first width
        length.addWidget(self.converge_radio, 0, 0, 1, 2)
        length.addWidget(self.ceiling_spin, 0, 2, 1, 2)
        for column, widget in enumerate((self.epochs_radio, self.epochs_spin, self.steps_radio, self.steps_spin)):
            length.addWidget(widget, 1, column)
        length.setColumnStretch(4, 1)
        main.addRow("Train", length)
        self.batch_spin = _spin(TrainingSpec, "batch_size", 65_536, defaults.batch_size)
        main.addRow("Batch size", self.batch_spin)
        self.lr_edit = with_help(QLineEdit(), TrainingSpec, "lr")
        self.lr_edit.setMinimumWidth(260)
        main.addRow("Learning rate", self.lr_edit)
        self.lr_note = Note()
        self.lr_note.setWordWrap(False)
        main.addRow("", self.lr_note)
        self.max_length_spin = _spin(DataSpec, "max_length", 8192, DataSpec().max_length)
        self.max_length_spin.setSuffix(" tokens")
        main.addRow("Longest input", self.max_length_spin)

        self.eval_spin = _spin(TrainingSpec, "eval_every", 10_000_000, 0, "auto (4 to 10 times a run)")
        self.eval_spin.setSuffix(" steps")
        main.addRow("Evaluate every", self.eval_spin)
        self.seed_spin = _spin(TrainingSpec, "seed", None, defaults.seed)
        main.addRow("Seed", self.seed_spin)
        self.device_combo = with_help(QComboBox(), TrainingSpec, "device")
        self.device_combo.addItem("Automatic (CUDA, then MPS, then CPU)", "auto")
        self.device_combo.addItem("CPU", "cpu")
        main.addRow("Device", self.device_combo)
        self.precision_combo = with_help(QComboBox(), TrainingSpec, "precision")
        for value, label in zip(field_choices(TrainingSpec, "precision"), PRECISION_LABELS):
            self.precision_combo.addItem(label, value)
        main.addRow("Precision", self.precision_combo)
        self.base_dtype_combo = with_help(QComboBox(), TrainingSpec, "base_dtype")
        for value, label in zip(field_choices(TrainingSpec, "base_dtype"), BASE_DTYPE_LABELS):
            self.base_dtype_combo.addItem(label, value)
        main.addRow("Frozen weights in", self.base_dtype_combo)

    def _build_more_settings(self, box: QVBoxLayout, defaults: TrainingSpec) -> None:
        """The rarer settings, folded under a 'More settings' button."""
        self.more_button = QToolButton()
        self.more_button.setText("More settings")
        self.more_button.setCheckable(True)
        self.more_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.more_button.setArrowType(Qt.ArrowType.RightArrow)
        self.more = QWidget()
        more = compact_form(self.more)
        more.setContentsMargins(0, 0, 0, 0)
        self.accumulation_spin = _spin(TrainingSpec, "gradient_accumulation", 4096, defaults.gradient_accumulation)
        more.addRow("Gradient accumulation", self.accumulation_spin)
        self.decay_spin = _real(TrainingSpec, "weight_decay", 10, defaults.weight_decay, 4, 0.01)
        more.addRow("Weight decay", self.decay_spin)
        self.schedule_combo = with_help(QComboBox(), TrainingSpec, "schedule")
        self.schedule_combo.addItems(field_choices(TrainingSpec, "schedule"))
        more.addRow("Schedule", self.schedule_combo)
        self.warmup_spin = _real(TrainingSpec, "warmup_ratio", 0.9, defaults.warmup_ratio, 3, 0.01)
        more.addRow("Warmup share", self.warmup_spin)
        self.checkpoint_spin = _spin(TrainingSpec, "checkpoint_every", 10_000_000, 0, "at every evaluation")
        more.addRow("Checkpoint every", self.checkpoint_spin)
        self.recompute_combo = with_help(QComboBox(), TrainingSpec, "gradient_checkpointing")
        for label, value in CHECKPOINTING_CHOICES:
            self.recompute_combo.addItem(label, value)
        more.addRow("Gradient checkpointing", self.recompute_combo)
        self.patience_spin = _spin(TrainingSpec, "early_stopping_patience", 1000, 0,
                                   f"auto ({DEFAULT_PATIENCE} evaluations when it trains until it stops improving)")
        more.addRow("Early stopping after", self.patience_spin)
        self.metric_combo = with_help(QComboBox(), TrainingSpec, "metric")
        self.metric_combo.addItems(METRICS)
        more.addRow("Metric", self.metric_combo)
        self.dropout_box = with_help(QCheckBox("Keep the model's dropout on"), TrainingSpec, "dropout")
        more.addRow("", self.dropout_box)
        self.group_box = with_help(QCheckBox("Batch texts of similar length together"), TrainingSpec,
                                   "group_by_length")
        self.group_box.setChecked(defaults.group_by_length)
        more.addRow("", self.group_box)
        box.addWidget(self.more_button)
        box.addWidget(self.more)
        self.more.setVisible(False)
        self.more_button.toggled.connect(self._toggle_more)

    def _connect_signals(self) -> None:
        for radio in (self.converge_radio, self.epochs_radio):
            radio.toggled.connect(self._length_kind_changed)
        self._length_kind_changed()
        for spin in (self.ceiling_spin, self.epochs_spin, self.steps_spin, self.batch_spin, self.max_length_spin,
                     self.eval_spin, self.seed_spin, self.accumulation_spin, self.decay_spin, self.warmup_spin,
                     self.checkpoint_spin, self.patience_spin):
            spin.valueChanged.connect(self.changed)
        for combo in (self.device_combo, self.precision_combo, self.base_dtype_combo, self.schedule_combo,
                      self.metric_combo, self.recompute_combo):
            combo.currentIndexChanged.connect(self.changed)
        self.lr_edit.textChanged.connect(self._check_lr)
        self.dropout_box.toggled.connect(self.changed)
        self.group_box.toggled.connect(self.changed)

    # --- reading ------------------------------------------------------------------------------------------
    def learning_rate(self) -> float | None:
        """The typed rate, None when empty (the method's default); ValueError with the core's one line (the range
        `jrft train --lr` checks) when it is not valid."""
        text = self.lr_edit.text().strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            value = text  # the core says it is not a number
        problem = setting_problem(TrainingSpec, "lr", value)
        if problem:
            raise ValueError(problem)
        return value

    def training_spec(self) -> TrainingSpec:
        """The settings as a TrainingSpec; a ValueError names a setting that is not valid (in the core's words)."""
        lr = self.learning_rate()
        try:
            return self._training_spec(lr)
        except UserError as error:  # a value outside its range: the boxes offer none, the core has the last word
            raise ValueError(str(error)) from None

    def _training_spec(self, lr: float | None) -> TrainingSpec:
        return TrainingSpec(
            epochs=self.epochs_spin.value() if self.epochs_radio.isChecked() else None,
            max_steps=self.steps_spin.value() if self.steps_radio.isChecked() else None,
            max_epochs=self.ceiling_spin.value(),
            batch_size=self.batch_spin.value(), gradient_accumulation=self.accumulation_spin.value(), lr=lr,
            weight_decay=self.decay_spin.value(), schedule=self.schedule_combo.currentText(),
            warmup_ratio=self.warmup_spin.value(), eval_every=self.eval_spin.value() or None,
            checkpoint_every=self.checkpoint_spin.value() or None,
            early_stopping_patience=self.patience_spin.value() or None, metric=self.metric_combo.currentText(),
            device=self.device_combo.currentData(), seed=self.seed_spin.value(), dropout=self.dropout_box.isChecked(),
            precision=self.precision_combo.currentData(), base_dtype=self.base_dtype_combo.currentData(),
            group_by_length=self.group_box.isChecked(), gradient_checkpointing=self.recompute_combo.currentData(),
        )

    def max_length(self) -> int:
        return self.max_length_spin.value()

    def describe_length(self) -> str:
        if self.steps_radio.isChecked():
            return f"{self.steps_spin.value():,} steps"
        if self.epochs_radio.isChecked():
            return f"{self.epochs_spin.value():g} epochs"
        return f"until it stops improving (at most {self.ceiling_spin.value():g} epochs)"

    # --- updating -----------------------------------------------------------------------------------------
    def set_steps(self, steps: int) -> None:
        self.steps_radio.setChecked(True)
        self.steps_spin.setValue(steps)

    def set_default_lr(self, lr: float | None, source: str = "") -> None:
        """The rate an empty box trains with, and (in its tooltip) the measurement that chose it."""
        self._default_lr = lr
        self.lr_edit.setPlaceholderText(f"empty = the method's default, {lr:g}" if lr else "")
        measured = f"\n\nThe default here, {lr:g}, was measured: {source}." if lr and source else ""
        self.lr_edit.setToolTip(field_help(TrainingSpec, "lr") + measured)
        self._check_lr()

    def add_devices(self, devices) -> None:
        """Accelerators found once torch has loaded: (device string, label) pairs."""
        for device, label in devices:
            if self.device_combo.findData(device) < 0:
                self.device_combo.addItem(label, device)

    def _check_lr(self) -> None:
        try:
            lr = self.learning_rate()
        except ValueError as error:
            self.lr_note.show_text(str(error), "error")
        else:
            default = self._default_lr
            if lr is None:
                self.lr_note.show_text(f"Using the method's default, {default:g}." if default else "")
            else:
                self.lr_note.show_text(f"Using {lr:g}"
                                       + (f" (the method's default is {default:g})." if default else "."))
        self.changed.emit()

    def _length_kind_changed(self) -> None:
        self.ceiling_spin.setEnabled(self.converge_radio.isChecked())
        self.epochs_spin.setEnabled(self.epochs_radio.isChecked())
        self.steps_spin.setEnabled(self.steps_radio.isChecked())
        self.changed.emit()

    def _toggle_more(self, shown: bool) -> None:
        self.more.setVisible(shown)
        self.more_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
