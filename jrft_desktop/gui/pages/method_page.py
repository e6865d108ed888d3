"""Page 3: the finetuning method, its size (the parameter budget), where it acts, and the training settings.

The size box and the method's other settings are made from the methods' options (`core.methods`: each declared with
its help, label and range in its method's module), and the presets are the methods' own."""

from __future__ import annotations

from dataclasses import Field

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...core.config import (POOLINGS, DataSpec, MethodSpec, ModelSpec, method_option_fields, method_presets,
                             optional_type)
from ..backend import MethodInfo, compute_devices, memory_estimate, method_catalog, plan_method
from ..worker import LatestRequest, run_in_background
from .base import Note, Page, compact_form, thousands, valid_range, with_help
from .privacy_settings import PrivacySettings
from .training_settings import TrainingSettings

POOLING_LABELS = {
    "auto": "auto (the model's default)",
    "mean": "mean of the tokens",
    "cls": "cls: first token (through the pooler)",
    "mask": "mask token (as in the paper)",
    "last": "last token (a decoder's default)",
}


PRESETS = method_presets()  # every method's, in the registry's order; the first is chosen at start
CUSTOM = "Custom"


def _option(name: str) -> Field:
    return next(option for option in method_option_fields() if option.name == name)


def _option_control(option: Field) -> QWidget:
    """The box for one method option: a checkbox (bool), a list (choices) or a number box (int)."""
    kind, label = optional_type(MethodSpec, option.name), option.metadata.get("label", option.name)
    if kind is bool:
        control = QCheckBox(label)
    elif option.metadata.get("choices"):
        control = QComboBox()
        control.addItems([str(choice) for choice in option.metadata["choices"]])
    else:
        control = valid_range(QSpinBox(), MethodSpec, option.name, option.metadata.get("box_maximum"))
    _set_value(control, option.default)
    return with_help(control, MethodSpec, option.name)


def _value(control: QWidget):
    if isinstance(control, QCheckBox):
        return control.isChecked()
    return control.currentText() if isinstance(control, QComboBox) else control.value()


def _set_value(control: QWidget, value) -> None:
    if isinstance(control, QCheckBox):
        control.setChecked(bool(value))
    elif isinstance(control, QComboBox):
        control.setCurrentText(str(value))
    elif value is not None:
        control.setValue(value)


def _catalog_and_devices():
    return method_catalog(), compute_devices()


class MethodPage(Page):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Method and settings", "How the model is adapted and how many parameters may train. "
                                                "Hover over any setting for its explanation.", scrollable=True,
                         parent=parent)
        self.methods: dict[str, MethodInfo] = {}
        self.plan = None  # the MethodPlan for the current choices, once computed
        self.plan_error = ""
        self._model_spec: ModelSpec | None = None
        self._model_parameters: int | None = None
        self._num_labels = 2
        self._task_name: str | None = None  # the task the data is for (None: the default one)
        self._trains_head = True  # False: the model's own output layer answers, frozen (generation)
        self._stock_class = ""  # the transformers class the task's merged model loads with
        self._pools = True  # the task's head reads one pooled state per example (False: every token's)
        self._train_examples: int | None = None
        self._data: DataSpec | None = None
        self._planner = LatestRequest(self, plan_method, self._show_plan, self._show_plan_failure)

        left, right = self._build_column_layouts()
        left.addWidget(self._build_method_choice())
        right.addWidget(self._build_budget_group())
        right.addWidget(self._build_placement_group())

        self.privacy = PrivacySettings()
        self.privacy.changed.connect(self.changed)
        left.addWidget(self.privacy)
        left.addStretch(1)

        self.training = TrainingSettings()
        self.training.changed.connect(self._update_privacy_context)
        self.training.changed.connect(self._show_memory)
        self.training.changed.connect(self.changed)
        right.addWidget(self.training)
        right.addStretch(1)

    def _build_column_layouts(self) -> tuple[QVBoxLayout, QVBoxLayout]:
        columns = QHBoxLayout()
        self.body.addLayout(columns)
        left, right = QVBoxLayout(), QVBoxLayout()
        columns.addLayout(left, 1)
        columns.addLayout(right, 1)
        return left, right

    def _build_method_choice(self) -> QGroupBox:
        """The preset list and a radio button per method (the buttons follow once the catalog loads)."""
        choice = QGroupBox("Method")
        self.method_box = QVBoxLayout(choice)
        preset_row = QHBoxLayout()
        preset_row.addWidget(QLabel("Preset:"))
        self.preset_combo = QComboBox()
        self.preset_combo.addItems([CUSTOM, *(preset.label for preset in PRESETS)])
        self.preset_combo.setToolTip("Settings used in the paper and common baselines; choosing one fills in the "
                                     "method and its size.")
        self.preset_combo.activated.connect(self._preset_chosen)
        preset_row.addWidget(self.preset_combo, 1)
        self.method_box.addLayout(preset_row)
        self.method_group = QButtonGroup(self)
        self.method_group.buttonToggled.connect(self._method_toggled)
        self.loading = QLabel("Loading the methods…")
        self.method_box.addWidget(self.loading)
        self.method_box.addStretch(1)
        return choice

    def _build_budget_group(self) -> QGroupBox:
        """The method's size, the trainable parameters it gives, and the memory it needs."""
        size = QGroupBox("Budget: how many parameters train")
        form = compact_form(size)
        self.size_label = QLabel("Size")
        self.size_spin = QSpinBox()
        self.size_spin.setRange(1, 1_000_000)
        self.size_spin.valueChanged.connect(self._choices_changed)
        form.addRow(self.size_label, self.size_spin)
        self.count_label = QLabel("–")
        self.count_label.setObjectName("bigNumber")
        self.count_label.setToolTip("Trainable parameters, counted on the model's structure without loading it.")
        form.addRow("Trainable", self.count_label)
        self.count_detail = QLabel("")
        self.count_detail.setObjectName("detail")
        self.count_detail.setWordWrap(True)
        form.addRow(self.count_detail)
        self.plan_note = Note()
        form.addRow(self.plan_note)
        self.memory_note = Note()
        self.memory_note.setObjectName("memoryNote")
        form.addRow(self.memory_note)
        return size

    def _build_placement_group(self) -> QGroupBox:
        """Every method option but the size (each shown for its methods only), and the pooling."""
        placement = QGroupBox("Where it acts")
        form = self.placement_form = compact_form(placement)
        self.option_controls: dict[str, QWidget] = {}  # every method option but the sizes; shown for its methods
        for option in method_option_fields():
            if option.metadata.get("size"):  # the size box above, shared by the sized methods
                continue
            control = self.option_controls[option.name] = _option_control(option)
            changed = control.toggled if isinstance(control, QCheckBox) else \
                control.currentIndexChanged if isinstance(control, QComboBox) else control.valueChanged
            changed.connect(self._choices_changed)
            form.addRow("" if isinstance(control, QCheckBox) else option.metadata.get("label", option.name), control)
        self.pooling_combo = with_help(QComboBox(), ModelSpec, "pooling")
        for pooling in POOLINGS:
            self.pooling_combo.addItem(POOLING_LABELS[pooling], pooling)
        self.pooling_combo.currentIndexChanged.connect(self._choices_changed)
        form.addRow("Pooling", self.pooling_combo)
        self.merge_note = Note()
        form.addRow(self.merge_note)
        return placement

    def load(self) -> None:
        """List the methods and devices (this loads torch, in the background; called once the window shows)."""
        run_in_background(self, _catalog_and_devices, on_result=self._show_catalog, on_error=self._show_load_failure)

    # --- what the rest of the app reads -------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return bool(self.methods)

    @property
    def method(self) -> MethodInfo | None:
        button = self.method_group.checkedButton()
        return self.methods[button.property("method")] if button else None

    @property
    def busy(self) -> bool:
        return self._planner.busy

    @property
    def position_combo(self) -> QComboBox:
        return self.option_controls["position"]

    def pooling(self) -> str:
        return self.pooling_combo.currentData()

    def method_spec(self) -> MethodSpec:
        """The chosen method with its size and the settings it reads (and no other)."""
        method = self.method
        reads = MethodSpec(name=method.name).method_options()
        values = {name: _value(control) for name, control in self.option_controls.items() if name in reads}
        if method.size_name:
            values[method.size_name] = self.size_spin.value()
        return MethodSpec(name=method.name, **values)

    def describe_choice(self) -> str:
        method = self.method
        if method is None:
            return "no method"
        size = f" {method.size_name}={self.size_spin.value()}" if method.size_name else ""
        return f"{method.title}{size}"

    # --- choosing -----------------------------------------------------------------------------------------
    def choose(self, method: str, size: int | None = None, pooling: str | None = None, **options) -> None:
        """Select a method (and optionally its size, pooling and options such as position="attention"), as a user
        would."""
        for button in self.method_group.buttons():
            if button.property("method") == method:
                button.setChecked(True)
        if size is not None:
            self.size_spin.setValue(size)
        for name, value in options.items():
            _set_value(self.option_controls[name], value)
        if pooling is not None:
            self.pooling_combo.setCurrentIndex(self.pooling_combo.findData(pooling))

    def choose_preset(self, label: str) -> None:
        preset = next(preset for preset in PRESETS if preset.label == label)
        spec = preset.spec()
        size_name = self.methods[preset.method].size_name
        self.choose(preset.method, getattr(spec, size_name) if size_name else None,
                    **{name: getattr(spec, name) for name in spec.method_options() if name in self.option_controls})

    def set_context(self, model_spec: ModelSpec | None, model_parameters: int | None, num_labels: int,
                    train_examples: int | None = None, task_name: str | None = None,
                    trains_head: bool = True, stock_class: str = "", pools: bool = True,
                    data: DataSpec | None = None) -> None:
        """The chosen model, number of classes and task, which the parameter counts depend on, and the number of
        training examples and the data, which the noise of private training depends on (by privacy unit: the
        number of units in the data)."""
        if (model_spec, model_parameters, num_labels, task_name) != (
                self._model_spec, self._model_parameters, self._num_labels, self._task_name):
            self._model_spec, self._model_parameters, self._num_labels = model_spec, model_parameters, num_labels
            self._task_name, self._trains_head, self._stock_class = task_name, trains_head, stock_class
            self._pools = pools
            self.placement_form.setRowVisible(self.pooling_combo, pools)  # a head on every token pools nothing
            if self.method is not None:
                self._show_merge_note()
            self._request_plan()
        self._train_examples, self._data = train_examples, data
        self._update_privacy_context()

    def _update_privacy_context(self) -> None:
        try:
            training = self.training.training_spec()
        except ValueError:
            training = None
        self.privacy.set_context(self._train_examples, training, self._data)

    def _preset_chosen(self, index: int) -> None:
        if index > 0:
            self.choose_preset(self.preset_combo.itemText(index))

    def _show_catalog(self, answer) -> None:
        methods, devices = answer
        self.loading.hide()
        self.methods = {method.name: method for method in methods}
        for method in methods:
            radio = QRadioButton(method.title)
            radio.setObjectName(f"method_{method.name}")
            radio.setProperty("method", method.name)
            radio.setToolTip(method.summary)
            explanation = QLabel(method.explanation)
            explanation.setObjectName("detail")
            explanation.setWordWrap(True)
            explanation.setContentsMargins(24, 0, 0, 4)
            self.method_group.addButton(radio)
            self.method_box.insertWidget(self.method_box.count() - 1, radio)
            self.method_box.insertWidget(self.method_box.count() - 1, explanation)
        self.training.add_devices(devices)
        self.choose_preset(PRESETS[0].label)
        self.changed.emit()

    def _show_load_failure(self, failure) -> None:
        self.loading.setText(f"The methods could not be loaded: {failure.message}")

    def _method_toggled(self, button, checked: bool) -> None:
        if not checked:
            return
        method = self.method
        self.size_spin.blockSignals(True)
        if method.size_name:
            size = _option(method.size_name)
            self.size_label.setText(size.metadata.get("label", method.size_name))
            valid_range(self.size_spin, MethodSpec, method.size_name, size.metadata.get("box_maximum"))
            with_help(self.size_spin, MethodSpec, method.size_name)
            self.size_spin.setValue(method.default_size or 1)
            self.size_spin.setSpecialValueText("")
        else:
            self.size_label.setText("Size")
            self.size_spin.setToolTip("This method trains a fixed set of parameters; it has no size to choose.")
        self.size_spin.setEnabled(bool(method.size_name))
        self.size_spin.blockSignals(False)
        reads = MethodSpec(name=method.name).method_options()
        for name, control in self.option_controls.items():
            self.placement_form.setRowVisible(control, name in reads)
        self.training.set_default_lr(method.default_lr)
        self._choices_changed()

    def _choices_changed(self) -> None:
        method = self.method
        if method is None:
            return
        self.preset_combo.setCurrentText(self._matching_preset())
        self._show_merge_note()
        self._request_plan()
        self.changed.emit()

    def _matching_preset(self) -> str:
        current = self.method_spec()
        return next((preset.label for preset in PRESETS if preset.spec() == current), CUSTOM)

    def _show_merge_note(self) -> None:
        method = self.method
        if not method.foldable:
            self.merge_note.show_text(f"{method.title} adds a prompt to the input, so it cannot become a stock "
                                      "merged model; you export and use its vector file.", "warning")
        elif not self._pools:
            stock = f" (transformers' {self._stock_class})" if self._stock_class else ""
            answers = ("with the trained head, which tags every token" if self._trains_head else
                       "with the tokenizer and its chat template; the model's own output layer answers")
            self.merge_note.show_text(f"It exports a merged model: the stock model{stock} {answers}, so pooling "
                                      "does not apply.", "info")
        else:
            self.merge_note.show_text("Every pooling exports a merged model (cls: the stock transformers classifier; "
                                      "mean: a sentence-transformers folder; any: ONNX). On SST-2, 400 SLaSh steps, "
                                      "mean pooling reached 82.7% and cls 80.6%.", "info")

    # --- parameter counts ---------------------------------------------------------------------------------
    def _request_plan(self) -> None:
        self.plan = None
        self.plan_error = ""
        if self.method is None or self._model_spec is None:
            self._planner.forget()
            self.count_label.setText("–")
            self.count_detail.setText("Choose a model to count the parameters." if self.method else "")
            return
        self.count_label.setText("counting…")
        self.plan_note.show_text("")
        model = ModelSpec(self._model_spec.name_or_path, self.pooling(), self._model_spec.trust_remote_code)
        self._planner.request(model, self.method_spec(), self._num_labels, self._task_name)

    def _show_plan(self, plan) -> None:
        self.plan = plan
        self.count_label.setText(f"{thousands(plan.trainable_params)} parameters")
        share = f" · {100 * plan.trainable_params / self._model_parameters:.3g}% of the model's " \
                f"{self._model_parameters / 1e6:.1f} M" if self._model_parameters else ""
        size = f" · {plan.size_name} = {thousands(plan.size)}" if plan.size_name else ""
        head = f"{thousands(plan.head_params)} in the head ({self._num_labels} outputs)" if self._trains_head else \
            "the model's own output layer, frozen (not in the vector file)"
        self.count_detail.setText(f"{thousands(plan.method_params)} in the method + {head}{size}{share}")
        self.plan_note.show_text(plan.note, "warning" if plan.note else "info")
        # the rate measured for this task or family (or the method's), and where it came from
        self.training.set_default_lr(plan.default_lr, plan.default_lr_source)
        self._show_position_source(plan)
        self._show_memory()
        self.changed.emit()

    def _show_position_source(self, plan) -> None:
        """The position's label: where 'auto' puts the shift for this task, and the measurement that chose it (the
        box keeps the setting's help)."""
        where = f"'auto' here: {plan.position} (measured: {plan.position_source})." if plan.position_source else ""
        self.placement_form.labelForField(self.position_combo).setToolTip(where)

    def _show_memory(self) -> None:
        """Before Start: what the run would take at its peak, against what this machine lets one run use."""
        if self.plan is None or self._model_spec is None:
            self.memory_note.show_text("")
            return
        try:
            training = self.training.training_spec()
        except ValueError:
            return
        estimate = memory_estimate(self._model_spec, self.plan, training, self.training.max_length(), self._task_name)
        text = f"Memory: {estimate.describe()}." + (f" {estimate.note[0].upper()}{estimate.note[1:]}." if estimate.note
                                                      else "")
        if not estimate.fits:
            text += " It will not fit: use a smaller batch, gradient checkpointing or a shorter maximum length."
        self.memory_note.show_text(text, "info" if estimate.fits else "error")

    def _show_plan_failure(self, failure) -> None:
        self.plan_error = failure.message
        self.count_label.setText("–")
        self.count_detail.setText("")
        self.plan_note.show_text(failure.message, "error")
        self.changed.emit()
