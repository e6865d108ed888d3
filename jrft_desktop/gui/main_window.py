"""The main window: a sidebar of pages in the order a user works (choose, train, look at results, history)."""

from __future__ import annotations

import time
from dataclasses import replace

from PySide6.QtCore import QEventLoop, Qt
from PySide6.QtGui import QAction, QActionGroup, QIcon, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPushButton,
    QStackedWidget,
    QStyleFactory,
    QVBoxLayout,
    QWidget,
)

from .. import __version__
from ..core.config import RunConfig
from ..core.paths import resources_dir
from . import dialogs
from .pages.base import thousands
from .pages.compare_page import ComparePage
from .pages.data_page import DataPage
from .pages.history_page import HistoryPage
from .pages.method_page import MethodPage
from .pages.model_page import ModelPage
from .pages.results_page import ResultsPage
from .pages.serve_page import ServePage
from .pages.train_page import TrainPage
from .plots import BudgetCurvePlot, CurvePanel
from .settings import THEMES, AppSettings

THEMES_DIR = resources_dir() / "themes"
SIDEBAR_WIDTH = 210
ICON_FILE = resources_dir() / "icons" / "jrft.svg"


def apply_theme(app: QApplication, theme: str) -> None:
    """Fusion with the theme's palette and style sheet (resources/themes/<theme>.qss)."""
    app.setStyle(QStyleFactory.create("Fusion"))
    palette = app.style().standardPalette()
    if theme == "dark":
        colors = {QPalette.ColorRole.Window: "#2b2d30", QPalette.ColorRole.WindowText: "#e6e6e6",
                  QPalette.ColorRole.Base: "#1f2023", QPalette.ColorRole.AlternateBase: "#2b2d30",
                  QPalette.ColorRole.Text: "#e6e6e6", QPalette.ColorRole.Button: "#3a3d41",
                  QPalette.ColorRole.ButtonText: "#e6e6e6", QPalette.ColorRole.Highlight: "#3d7bd9",
                  QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#3a3d41",
                  QPalette.ColorRole.ToolTipText: "#e6e6e6", QPalette.ColorRole.PlaceholderText: "#8a8a8a"}
        for role, color in colors.items():
            palette.setColor(role, color)
        palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, "#77797c")
        palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText, "#77797c")
        palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, "#77797c")
    app.setPalette(palette)
    app.setStyleSheet((THEMES_DIR / f"{theme}.qss").read_text(encoding="utf-8"))


class MainWindow(QMainWindow):
    def __init__(self, settings: AppSettings):
        super().__init__()
        self.settings = settings
        self.setWindowTitle("JRFT Desktop")
        self.setWindowIcon(QIcon(str(ICON_FILE)))

        self.model_page = ModelPage(settings)
        self.data_page = DataPage(settings)
        self.method_page = MethodPage()
        self.train_page = TrainPage(self.prepare_run)
        self.results_page = ResultsPage(settings)
        self.history_page = HistoryPage()
        self.compare_page = ComparePage(self.prepare_run)
        self.serve_page = ServePage()
        self.pages = (self.model_page, self.data_page, self.method_page, self.train_page, self.results_page,
                      self.history_page, self.compare_page, self.serve_page)

        self._build_layout()
        self.sidebar.currentRowChanged.connect(self._page_changed)
        self.back_button.clicked.connect(lambda: self.show_page(self.pages[self.stack.currentIndex() - 1]))
        self.next_button.clicked.connect(lambda: self.show_page(self.pages[self.stack.currentIndex() + 1]))
        self._build_menus()
        self._connect_pages()
        self.show_page(self.model_page)
        if settings.geometry is None or not self.restoreGeometry(settings.geometry):
            self.resize(1320, 860)
        self.apply_theme(settings.theme)

    def _build_layout(self) -> None:
        """A sidebar listing the pages, the current page, and Back / Next below it."""
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        panel = QWidget()
        panel.setObjectName("sidebarPanel")
        panel.setFixedWidth(SIDEBAR_WIDTH)
        side = QVBoxLayout(panel)
        side.setContentsMargins(0, 0, 0, 0)
        side.setSpacing(0)
        brand = QLabel(f"JRFT Desktop<br><span style='font-size:9pt; font-weight:normal'>few-parameter "
                       f"finetuning · {__version__}</span>")
        brand.setObjectName("brand")
        brand.setWordWrap(True)
        side.addWidget(brand)
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        side.addWidget(self.sidebar, 1)
        layout.addWidget(panel)
        self.stack = QStackedWidget()
        for number, page in enumerate(self.pages, start=1):
            self.stack.addWidget(page)
            item = QListWidgetItem(f"{number}   {page.title.split(' ')[0]}")
            item.setToolTip(page.title)
            self.sidebar.addItem(item)
        right = QVBoxLayout()
        right.setContentsMargins(0, 0, 0, 0)
        right.addWidget(self.stack, 1)
        footer = QHBoxLayout()
        footer.setContentsMargins(24, 6, 24, 12)
        self.back_button = QPushButton("← Back")
        self.next_button = QPushButton("Next →")
        self.next_button.setObjectName("primary")
        footer.addWidget(self.back_button)
        footer.addStretch(1)
        footer.addWidget(self.next_button)
        right.addLayout(footer)
        layout.addLayout(right, 1)
        self.setCentralWidget(central)
        self.summary_label = QLabel("")
        self.statusBar().addWidget(self.summary_label, 1)

    def show_on_screen(self) -> float:
        """Show the window and wait until it is on screen; returns that moment (time.perf_counter)."""
        self.show()
        deadline = time.perf_counter() + 5
        QApplication.processEvents()
        while not self.windowHandle().isExposed() and time.perf_counter() < deadline:
            QApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
        return time.perf_counter()

    def load_pages(self) -> None:
        """Start the pages' background work: the remembered model and data, the methods (torch loads there)."""
        for page in (self.model_page, self.data_page, self.method_page, self.compare_page):
            page.load()

    # --- the run to train ---------------------------------------------------------------------------------
    def prepare_run(self) -> tuple[RunConfig, str]:
        """The configuration of the current choices and a description of it; ValueError says what is missing."""
        model, data, method = self.model_page, self.data_page, self.method_page
        if model.info is None:
            if model.error:
                raise ValueError(f"the model cannot be used: {model.error}")
            raise ValueError("the model is still being read." if model.busy else
                             "choose a model that can be read (see the Model page).")
        summary = data.summary
        if summary is None:
            if data.busy:
                raise ValueError("the data is still being checked.")
            raise ValueError(f"the data cannot be used: {data.error}" if data.error else
                             "choose the training data on the Data page.")
        if not method.ready:
            raise ValueError("the methods are still loading.")
        if method.plan_error:
            raise ValueError(method.plan_error)
        training = method.training.training_spec()
        privacy = method.privacy.privacy()
        if method.privacy.active and method.privacy.problem:
            raise ValueError(method.privacy.problem)
        if method.privacy.active and method.privacy.plan is None:
            raise ValueError("the noise for private training is still being computed.")
        config = RunConfig(
            model=model.model_spec(method.pooling()),
            data=replace(data.data_spec(), max_length=method.training.max_length(),
                         privacy_unit=method.privacy.privacy_unit()),
            method=method.method_spec(), training=training, privacy=privacy,
        )
        what_it_learns = summary.short_description  # '2 classes', 'regression', 'generation', ... (the task's words)
        trainable = f" · {thousands(method.plan.trainable_params)} trainable parameters" if method.plan else ""
        if method.privacy.active:
            plan = method.privacy.plan
            trainable += (f" · private: ε ≤ {plan.epsilon_target:g}, δ = {plan.delta:.2g}, "
                          f"σ = {plan.noise_multiplier:.3g}")
        description = (f"<b>{method.describe_choice()}</b> on <b>{data.short_name()}</b> "
                       f"({thousands(summary.train_rows)} rows, {what_it_learns}) with <b>{model.short_name()}</b><br>"
                       f"{method.training.describe_length()}, batch {training.batch_size}, pooling {method.pooling()}, "
                       f"longest input {method.training.max_length()} tokens{trainable}")
        return config, description

    # --- pages --------------------------------------------------------------------------------------------
    def show_page(self, page: QWidget) -> None:
        self.sidebar.setCurrentRow(self.pages.index(page))

    def _page_changed(self, index: int) -> None:
        self.stack.setCurrentIndex(index)
        page = self.pages[index]
        self.back_button.setVisible(0 < index <= self.pages.index(self.train_page))
        self.next_button.setVisible(index < self.pages.index(self.train_page))
        if index + 1 < len(self.pages):
            self.next_button.setText(f"Next: {self.pages[index + 1].title.split(' ')[0]} →")
        if page in (self.history_page, self.serve_page):
            page.refresh()
        if page is self.train_page:
            self.train_page.refresh_plan()

    def _connect_pages(self) -> None:
        for signal in (self.model_page.changed, self.data_page.changed, self.data_page.summary_changed):
            signal.connect(self._choices_changed)
        self.method_page.changed.connect(self._choices_changed)
        self.train_page.running_changed.connect(self._training_changed)
        self.train_page.run_ended.connect(self._run_ended)
        self.train_page.results_requested.connect(self.open_results)
        self.results_page.resume_requested.connect(self.resume_run)
        self.history_page.open_requested.connect(self.open_results)
        self.history_page.resume_requested.connect(self.resume_run)
        self.history_page.run_deleted.connect(self.results_page.close_run)
        self._choices_changed()

    def _choices_changed(self) -> None:
        model, summary = self.model_page, self.data_page.summary
        self.method_page.set_context(model.model_spec() if model.info else None,
                                     model.info.parameters if model.info else None,
                                     summary.num_labels if summary else 2, summary.train_rows if summary else None,
                                     summary.task_name if summary else None,
                                     summary.trains_head if summary else True,
                                     summary.stock_class if summary else "",
                                     summary.pools if summary else True,
                                     self.data_page.data_spec() if summary else None)
        self.summary_label.setText(f"Model: {model.short_name() or '–'}   ·   Data: {self.data_page.short_name()}"
                                   f"   ·   Method: {self.method_page.describe_choice()}")
        self.train_page.refresh_plan()

    def open_results(self, run_dir: str) -> None:
        self.results_page.open_run(run_dir)
        self.show_page(self.results_page)

    def resume_run(self, run_dir: str) -> None:
        self.show_page(self.train_page)
        self.train_page.resume(run_dir)

    def _training_changed(self, running: bool) -> None:
        self.history_page.training_dir = self.train_page.last_run_dir if running else None
        self.history_page.refresh()

    def _run_ended(self, result) -> None:
        self.history_page.refresh()
        if getattr(result, "status", None) in ("completed", "early-stopped"):
            self.results_page.open_run(result.run_dir)

    # --- menus, theme, closing ----------------------------------------------------------------------------
    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        folder = QAction("Open the runs folder", self)
        folder.triggered.connect(self.history_page.open_runs_folder)
        file_menu.addAction(folder)
        quit_action = QAction("Quit", self)
        quit_action.setShortcut("Ctrl+Q")
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        view_menu = self.menuBar().addMenu("&View")
        self.theme_actions = QActionGroup(self)
        for theme in THEMES:
            action = QAction(f"{theme.capitalize()} theme", self, checkable=True)
            action.setData(theme)
            action.triggered.connect(lambda checked, theme=theme: self.apply_theme(theme))
            self.theme_actions.addAction(action)
            view_menu.addAction(action)
        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("About JRFT Desktop", self)
        about.triggered.connect(lambda: dialogs.show_info(
            self, "About JRFT Desktop",
            f"JRFT Desktop {__version__}\n\nFinetune a pretrained transformer with a few thousand parameters: "
            "SLaSh and JR-WARP (Gupta, Galstyan and Ver Steeg, ACL Findings 2023, arXiv 2305.19264) next to "
            "linear-head, BitFit, LoRA, WARP and full finetuning."))
        help_menu.addAction(about)

    def apply_theme(self, theme: str) -> None:
        apply_theme(QApplication.instance(), theme)
        self.settings.theme = theme
        for action in self.theme_actions.actions():
            action.setChecked(action.data() == theme)
        for panel in (*self.findChildren(CurvePanel), *self.findChildren(BudgetCurvePlot)):
            panel.apply_theme(theme)

    def closeEvent(self, event) -> None:
        if self.train_page.running:
            if not dialogs.confirm(self, "A run is training", "Stop the run and quit? It saves a checkpoint, so you "
                                                              "can resume it later from History."):
                event.ignore()
                return
            self.statusBar().showMessage("Stopping the run after this step…")
            self.train_page.cancel()
            self.train_page.run.wait()
        self.compare_page.stop()  # a comparison in the background ends after its current step
        self.serve_page.stop()  # the server's process ends with the app
        self.settings.geometry = self.saveGeometry()
        self.settings.sync()
        super().closeEvent(event)
