"""Private training: the Privacy dataclass as a form, with the noise multiplier σ shown before training (or why
the budget ε cannot be reached), computed by the core in the background; with a privacy unit column, over the number
of units in the data, as training counts them."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QGroupBox, QLabel, QLineEdit, QSpinBox,
                               QVBoxLayout, QWidget)

from ...core.config import DataSpec, TrainingSpec, Privacy, field_choices, field_help
from ...core.errors import UserError
from ..backend import preview_privacy
from ..worker import LatestRequest
from .base import Note, compact_form, valid_range, with_help

DEFAULT_EPSILON = 3.0  # the paper's stricter budget


class PrivacySettings(QGroupBox):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Private training (differential privacy)", parent)
        self.setObjectName("privacy")
        defaults = Privacy()
        self.plan = None  # the core's PrivacyPlan for the current choices, once computed
        self.problem = ""  # why the current choices cannot be trained privately
        self._context: tuple[int, TrainingSpec, DataSpec | None] | None = None
        self._preview = LatestRequest(self, preview_privacy, self._show_plan, self._show_problem)
        box = QVBoxLayout(self)
        self.enabled_box = QCheckBox("Train with differential privacy (DP-SGD)")
        self.enabled_box.setToolTip("Clip every example's gradient and add calibrated noise, so the trained model "
                                    "reveals provably little about any one training example (an (ε, δ) guarantee).")
        box.addWidget(self.enabled_box)
        self.form = QWidget()
        form = compact_form(self.form)
        form.setContentsMargins(0, 0, 0, 0)
        self.epsilon_spin = with_help(QDoubleSpinBox(), Privacy, "epsilon")
        self.epsilon_spin.setDecimals(2)
        valid_range(self.epsilon_spin, Privacy, "epsilon", 1000)
        self.epsilon_spin.setSingleStep(0.5)
        self.epsilon_spin.setValue(DEFAULT_EPSILON)
        form.addRow("Budget ε", self.epsilon_spin)
        self.delta_edit = with_help(QLineEdit(), Privacy, "delta")
        self.delta_edit.setPlaceholderText("empty = chosen below 1/N")
        self.delta_edit.setMinimumWidth(260)  # the whole hint, as the learning rate's
        form.addRow("δ", self.delta_edit)
        self.clip_spin = with_help(QDoubleSpinBox(), Privacy, "max_grad_norm")
        self.clip_spin.setDecimals(3)
        valid_range(self.clip_spin, Privacy, "max_grad_norm", 1000)
        self.clip_spin.setSingleStep(0.1)
        self.clip_spin.setValue(defaults.max_grad_norm)
        form.addRow("Clipping norm C", self.clip_spin)
        self.accountant_combo = with_help(QComboBox(), Privacy, "accountant")
        self.accountant_combo.addItems(field_choices(Privacy, "accountant"))
        form.addRow("Accountant", self.accountant_combo)
        self._add_unit_rows(form)
        self.noise_label = QLabel("–")
        self.noise_label.setObjectName("bigNumber")
        self.noise_label.setToolTip(field_help(Privacy, "noise_multiplier"))
        form.addRow("Noise σ", self.noise_label)
        self.note = Note()
        form.addRow(self.note)
        box.addWidget(self.form)
        self.form.setVisible(False)
        self._add_canaries(box)

        self.enabled_box.toggled.connect(self._toggled)
        for spin in (self.epsilon_spin, self.clip_spin):
            spin.valueChanged.connect(self._request)
        self.delta_edit.textChanged.connect(self._request)
        self.accountant_combo.currentIndexChanged.connect(self._request)

    def _add_unit_rows(self, form) -> None:
        """The privacy unit column (DP per person, not per row) and the most rows of a unit a step trains on."""
        self.unit_edit = with_help(QLineEdit(), DataSpec, "privacy_unit")
        self.unit_edit.setPlaceholderText("empty = each row; or a column such as user_id")
        form.addRow("Privacy unit column", self.unit_edit)
        self.unit_rows_spin = with_help(valid_range(QSpinBox(), Privacy, "max_rows_per_unit", 4096), Privacy,
                                        "max_rows_per_unit")
        self.unit_rows_spin.setValue(Privacy().max_rows_per_unit)
        form.addRow("Most rows of a unit per step", self.unit_rows_spin)
        self.unit_edit.textChanged.connect(self._request)
        self.unit_rows_spin.valueChanged.connect(self.changed)

    def _add_canaries(self, box: QVBoxLayout) -> None:
        """How many audit canaries the run trains with: shown private or not, the audit's evidence either way."""
        canaries = compact_form()
        canaries.setContentsMargins(0, 0, 0, 0)
        self.canaries_spin = with_help(valid_range(QSpinBox(), Privacy, "audit_canaries", 100_000), Privacy,
                                       "audit_canaries")
        self.canaries_spin.setSingleStep(100)
        canaries.addRow("Audit canaries", self.canaries_spin)
        box.addLayout(canaries)
        self.canaries_spin.valueChanged.connect(self._request)  # the canaries that train count in N

    # --- what the rest of the app reads -------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.enabled_box.isChecked()

    @property
    def busy(self) -> bool:
        return self._preview.busy

    def privacy_unit(self) -> str | None:
        """The privacy unit column (DataSpec.privacy_unit) of a private run; None: each row is its own unit."""
        return (self.unit_edit.text().strip() or None) if self.active else None

    def privacy(self) -> Privacy:
        """The settings (no DP when off; the audit canaries either way); ValueError names a setting that is not
        valid."""
        if not self.active:
            return Privacy(audit_canaries=self.canaries_spin.value())
        text = self.delta_edit.text().strip()
        try:
            delta = float(text) if text else None
        except ValueError:
            raise ValueError(f"δ {text!r} is not a number (e.g. 1e-6); leave it empty to choose one below 1/N.") \
                from None
        try:
            return Privacy(epsilon=self.epsilon_spin.value(), delta=delta, max_grad_norm=self.clip_spin.value(),
                           accountant=self.accountant_combo.currentText(),
                           max_rows_per_unit=self.unit_rows_spin.value(), audit_canaries=self.canaries_spin.value())
        except UserError as error:  # e.g. a δ of 1 or more: the core's one line
            raise ValueError(str(error)) from None

    # --- updating -----------------------------------------------------------------------------------------
    def set_enabled(self, enabled: bool, epsilon: float | None = None) -> None:
        if epsilon is not None:
            self.epsilon_spin.setValue(epsilon)
        self.enabled_box.setChecked(enabled)

    def set_context(self, train_examples: int | None, training: TrainingSpec | None, data: DataSpec | None) -> None:
        """The training data's size and the schedule, which σ depends on, and the data (known with its size), whose
        privacy unit column gives the number of units σ depends on instead."""
        context = (train_examples, training, data) if train_examples and training is not None else None
        if context != self._context:
            self._context = context
            self._request()

    def _toggled(self, enabled: bool) -> None:
        self.form.setVisible(enabled)
        self._request()

    def _request(self) -> None:
        self.plan, self.problem = None, ""
        if not self.active:
            self._preview.forget()
            self.changed.emit()
            return
        try:
            privacy = self.privacy()
        except ValueError as error:
            self._preview.forget()
            self._show_text("–", str(error))
            return
        if self._context is None:
            self._preview.forget()
            self.noise_label.setText("–")
            self.note.show_text("Choose the training data to compute the noise.")
            self.changed.emit()
            return
        self.noise_label.setText("computing…")
        self.note.show_text("")
        train_examples, training, data = self._context
        unit = self.privacy_unit()
        self._preview.request(privacy, train_examples, training,
                              replace(data, privacy_unit=unit) if data is not None and unit else None)
        self.changed.emit()

    def _show_plan(self, plan) -> None:
        self.plan = plan
        self.noise_label.setText(f"σ = {plan.noise_multiplier:.3g}")
        self.note.show_text(
            f"Noise of {plan.noise_multiplier:.3g} × C added once per step, calibrated so that {plan.steps:,} steps "
            f"with Poisson sampling rate q = {plan.sample_rate:.3g} spend ε = {plan.epsilon_planned:.3g} at "
            f"δ = {plan.delta:.2g} ({plan.delta_source})." + self._unit_note(plan))
        self.changed.emit()

    def _unit_note(self, plan) -> str:
        unit = self.privacy_unit()
        if not unit:
            return ""
        canaries = ", and each audit canary that trains" if self.canaries_spin.value() else ""
        return f" N = {plan.train_examples:,} units: the distinct values of '{unit}' in the training rows{canaries}."

    def _show_problem(self, failure) -> None:
        self._show_text("cannot train", failure.message)

    def _show_text(self, value: str, problem: str) -> None:
        self.problem = problem
        self.noise_label.setText(value)
        self.note.show_text(problem, "error")
        self.changed.emit()
