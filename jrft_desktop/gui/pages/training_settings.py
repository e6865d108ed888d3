"""How long and how to train: the TrainingSpec dataclass as a form (with the maximum length of the inputs)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QRadioButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.config import TrainingSpec, DataSpec, field_choices
from .base import Note, compact_form, with_help

METRICS = ("auto", "accuracy", "macro_f1", "matthews", "pearson", "spearman")


def _spin(low: int, high: int, value: int, special: str = "") -> QSpinBox:
    """An integer box; with `special`, its lowest value reads as that word (meaning 'not set')."""
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    if special:
        spin.setSpecialValueText(special)
    return spin


def _real(low: float, high: float, value: float, decimals: int, step: float) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(low, high)
    spin.setDecimals(decimals)
    spin.setSingleStep(step)
    spin.setValue(value)
    return spin


class TrainingSettings(QGroupBox):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Training settings", parent)
        defaults = TrainingSpec()
        self._default_lr = None
        box = QVBoxLayout(self)
        main = compact_form()
        box.addLayout(main)

        self.epochs_radio = with_help(QRadioButton("Epochs"), TrainingSpec, "epochs")
        self.steps_radio = with_help(QRadioButton("Steps"), TrainingSpec, "max_steps")
        self.epochs_spin = with_help(_real(0.1, 1000, 3.0, 1, 0.5), TrainingSpec, "epochs")
        self.steps_spin = with_help(_spin(1, 10_000_000, 500), TrainingSpec, "max_steps")
        self.epochs_radio.setChecked(True)
        length = QHBoxLayout()
        for widget in (self.epochs_radio, self.epochs_spin, self.steps_radio, self.steps_spin):
            length.addWidget(widget)
        length.addStretch(1)
        main.addRow("Train for", length)
        self.batch_spin = with_help(_spin(1, 65_536, defaults.batch_size), TrainingSpec, "batch_size")
        main.addRow("Batch size", self.batch_spin)
        self.lr_edit = with_help(QLineEdit(), TrainingSpec, "lr")
        self.lr_edit.setMinimumWidth(260)
        main.addRow("Learning rate", self.lr_edit)
        self.lr_note = Note()
        self.lr_note.setWordWrap(False)
        main.addRow("", self.lr_note)
        self.max_length_spin = with_help(_spin(8, 8192, DataSpec().max_length), DataSpec, "max_length")
        self.max_length_spin.setSuffix(" tokens")
        main.addRow("Longest input", self.max_length_spin)

        self.eval_spin = with_help(_spin(0, 10_000_000, 0, "auto (10 times a run)"), TrainingSpec, "eval_every")
        self.eval_spin.setSuffix(" steps")
        main.addRow("Evaluate every", self.eval_spin)
        self.seed_spin = with_help(_spin(0, 2**31 - 1, defaults.seed), TrainingSpec, "seed")
        main.addRow("Seed", self.seed_spin)
        self.device_combo = with_help(QComboBox(), TrainingSpec, "device")
        self.device_combo.addItem("Automatic (CUDA, then MPS, then CPU)", "auto")
        self.device_combo.addItem("CPU", "cpu")
        main.addRow("Device", self.device_combo)

        self.more_button = QToolButton()
        self.more_button.setText("More settings")
        self.more_button.setCheckable(True)
        self.more_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.more_button.setArrowType(Qt.ArrowType.RightArrow)
        self.more = QWidget()
        more = compact_form(self.more)
        more.setContentsMargins(0, 0, 0, 0)
        self.accumulation_spin = with_help(_spin(1, 4096, defaults.gradient_accumulation), TrainingSpec,
                                           "gradient_accumulation")
        more.addRow("Gradient accumulation", self.accumulation_spin)
        self.decay_spin = with_help(_real(0, 10, defaults.weight_decay, 4, 0.01), TrainingSpec, "weight_decay")
        more.addRow("Weight decay", self.decay_spin)
        self.schedule_combo = with_help(QComboBox(), TrainingSpec, "schedule")
        self.schedule_combo.addItems(field_choices(TrainingSpec, "schedule"))
        more.addRow("Schedule", self.schedule_combo)
        self.warmup_spin = with_help(_real(0, 0.9, defaults.warmup_ratio, 3, 0.01), TrainingSpec, "warmup_ratio")
        more.addRow("Warmup share", self.warmup_spin)
        self.checkpoint_spin = with_help(_spin(0, 10_000_000, 0, "at every evaluation"), TrainingSpec,
                                         "checkpoint_every")
        more.addRow("Checkpoint every", self.checkpoint_spin)
        self.patience_spin = with_help(_spin(0, 1000, 0, "off"), TrainingSpec, "early_stopping_patience")
        more.addRow("Early stopping after", self.patience_spin)
        self.metric_combo = with_help(QComboBox(), TrainingSpec, "metric")
        self.metric_combo.addItems(METRICS)
        more.addRow("Metric", self.metric_combo)
        self.dropout_box = with_help(QCheckBox("Keep the model's dropout on"), TrainingSpec, "dropout")
        more.addRow("", self.dropout_box)
        box.addWidget(self.more_button)
        box.addWidget(self.more)
        self.more.setVisible(False)
        self.more_button.toggled.connect(self._toggle_more)

        self.epochs_radio.toggled.connect(self._length_kind_changed)
        self._length_kind_changed()
        for spin in (self.epochs_spin, self.steps_spin, self.batch_spin, self.max_length_spin, self.eval_spin,
                     self.seed_spin, self.accumulation_spin, self.decay_spin, self.warmup_spin, self.checkpoint_spin,
                     self.patience_spin):
            spin.valueChanged.connect(self.changed)
        for combo in (self.device_combo, self.schedule_combo, self.metric_combo):
            combo.currentIndexChanged.connect(self.changed)
        self.lr_edit.textChanged.connect(self._check_lr)
        self.dropout_box.toggled.connect(self.changed)

    # --- reading ------------------------------------------------------------------------------------------
    def learning_rate(self) -> float | None:
        """The typed rate, None when empty (the method's default); ValueError when it is not a positive number."""
        text = self.lr_edit.text().strip()
        if not text:
            return None
        value = float(text)
        if not value > 0:
            raise ValueError(text)
        return value

    def training_spec(self) -> TrainingSpec:
        """The settings as a TrainingSpec; a ValueError names a setting that is not valid."""
        try:
            lr = self.learning_rate()
        except ValueError:
            raise ValueError(f"The learning rate {self.lr_edit.text()!r} is not a positive number "
                             "(e.g. 0.03 or 3e-2); leave it empty for the method's default.") from None
        by_steps = self.steps_radio.isChecked()
        return TrainingSpec(
            epochs=None if by_steps else self.epochs_spin.value(),
            max_steps=self.steps_spin.value() if by_steps else None,
            batch_size=self.batch_spin.value(), gradient_accumulation=self.accumulation_spin.value(), lr=lr,
            weight_decay=self.decay_spin.value(), schedule=self.schedule_combo.currentText(),
            warmup_ratio=self.warmup_spin.value(), eval_every=self.eval_spin.value() or None,
            checkpoint_every=self.checkpoint_spin.value() or None,
            early_stopping_patience=self.patience_spin.value() or None, metric=self.metric_combo.currentText(),
            device=self.device_combo.currentData(), seed=self.seed_spin.value(), dropout=self.dropout_box.isChecked(),
        )

    def max_length(self) -> int:
        return self.max_length_spin.value()

    def describe_length(self) -> str:
        if self.steps_radio.isChecked():
            return f"{self.steps_spin.value():,} steps"
        return f"{self.epochs_spin.value():g} epochs"

    # --- updating -----------------------------------------------------------------------------------------
    def set_steps(self, steps: int) -> None:
        self.steps_radio.setChecked(True)
        self.steps_spin.setValue(steps)

    def set_default_lr(self, lr: float | None) -> None:
        self._default_lr = lr
        self.lr_edit.setPlaceholderText(f"empty = the method's default, {lr:g}" if lr else "")
        self._check_lr()

    def add_devices(self, devices) -> None:
        """Accelerators found once torch has loaded: (device string, label) pairs."""
        for device, label in devices:
            if self.device_combo.findData(device) < 0:
                self.device_combo.addItem(label, device)

    def _check_lr(self) -> None:
        try:
            lr = self.learning_rate()
        except ValueError:
            self.lr_note.show_text("Type a positive number such as 0.03 or 3e-2.", "error")
        else:
            default = self._default_lr
            if lr is None:
                self.lr_note.show_text(f"Using the method's default, {default:g}." if default else "")
            else:
                self.lr_note.show_text(f"Using {lr:g}"
                                       + (f" (the method's default is {default:g})." if default else "."))
        self.changed.emit()

    def _length_kind_changed(self) -> None:
        self.epochs_spin.setEnabled(self.epochs_radio.isChecked())
        self.steps_spin.setEnabled(self.steps_radio.isChecked())
        self.changed.emit()

    def _toggle_more(self, shown: bool) -> None:
        self.more.setVisible(shown)
        self.more_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
