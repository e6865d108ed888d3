"""Page 8: serve finished runs over the OpenAI-compatible API: `jrft serve` in a process of its own (closing it frees
all it loaded), its address, copyable curl and OpenAI-client snippets, its request log and live throughput read
from its /metrics. Closing the app stops it."""

from __future__ import annotations

import json
import time
from string import Template

from PySide6.QtCore import QByteArray, QProcess, QProcessEnvironment, Qt, QTimer, QUrl
from PySide6.QtGui import QGuiApplication
from PySide6.QtNetwork import QNetworkAccessManager, QNetworkReply, QNetworkRequest
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ...core.errors import UserError
from .. import backend
from .base import Note, Page, compact_form

LOG_LINES = 5000
POLL_MS = 1000


CHAT = Template("""curl $url/v1/chat/completions -H 'Content-Type: application/json'$header \\
     -d '{"model": $name, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 64}'

import os
from openai import OpenAI

client = OpenAI(base_url="$url/v1", api_key=$key)
answer = client.chat.completions.create(model=$name, max_tokens=64,
                                        messages=[{"role": "user", "content": "Hello!"}])
print(answer.choices[0].message.content)
""")
PREDICT = Template("""curl $url/predict -H 'Content-Type: application/json'$header \\
     -d '{"model": $name, "inputs": ["a first text", "a second one"]}'

import os
import httpx

answers = httpx.post("$url/predict", json={"model": $name, "inputs": ["a first text", "a second one"]}$auth)
print(answers.json())
""")
EMBED = Template("""curl $url/v1/embeddings -H 'Content-Type: application/json'$header \\
     -d '{"model": $name, "input": ["a text"]}'

import os
from openai import OpenAI

client = OpenAI(base_url="$url/v1", api_key=$key)
print(client.embeddings.create(model=$name, input=["a text"]).data[0].embedding[:5])
""")


def snippets(url: str, model: dict, keyed: bool, variable: str) -> str:
    """A curl command and a Python call for `model` (an entry of /v1/models), by the routes it answers."""
    routes = model.get("routes", [])
    template = CHAT if "/v1/chat/completions" in routes else PREDICT if "/predict" in routes else EMBED
    key = f'os.environ["{variable}"]' if keyed else '"none"'
    return template.substitute(
        url=url, name=json.dumps(model["id"]), key=key,
        header=f' -H "Authorization: Bearer ${variable}"' if keyed else "",
        auth=f', headers={{"Authorization": "Bearer " + {key}}}' if keyed else "")


def metric_totals(text: str) -> tuple[float, float, float]:
    """(requests, tokens generated, answers running now) from the server's /metrics."""
    requests = tokens = running = 0.0
    for line in text.splitlines():
        if line.startswith("jrft_requests_total{") and '"/metrics"' not in line:
            requests += float(line.rsplit(" ", 1)[1])
        elif line.startswith('jrft_tokens_total{kind="generated"}'):
            tokens = float(line.rsplit(" ", 1)[1])
        elif line.startswith("jrft_running_answers "):
            running = float(line.rsplit(" ", 1)[1])
    return requests, tokens, running


class ServePage(Page):
    def __init__(self, parent: QWidget | None = None):
        super().__init__("Serve", "Serve finished runs over an OpenAI-compatible HTTP API: every request names its "
                                  "run, and requests for runs of one base model share batches. Programs on this "
                                  "computer call it with the OpenAI client, curl or any HTTP library.",
                         scrollable=True, parent=parent)
        self.process: QProcess | None = None
        self.url = ""
        self.network = QNetworkAccessManager(self)
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self._poll)
        self._previous: tuple[float, float, float] | None = None  # (time, requests, tokens) at the last poll
        self._build()
        self.refresh()

    # --- layout -----------------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.runs = QListWidget()
        self.runs.setMaximumHeight(150)
        self.runs.setToolTip("Tick the runs to serve: finished runs of one base model (a server serves one base).")
        refresh = QPushButton("Refresh the list")
        refresh.clicked.connect(self.refresh)
        self.body.addWidget(QLabel("Runs to serve"))
        self.body.addWidget(self.runs)
        self.body.addWidget(refresh, 0, Qt.AlignmentFlag.AlignLeft)
        form = compact_form()
        self.port = QSpinBox()
        self.port.setRange(0, 65535)
        self.port.setValue(8000)
        self.port.setToolTip("The port to listen on (0: a free one).")
        self.share = QCheckBox("Share on my network (0.0.0.0)")
        self.share.setToolTip("Other machines can then reach the server over plain HTTP: set an API key.")
        self.key = QLineEdit()
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setPlaceholderText("none")
        self.key.setToolTip("Every request but /health then needs 'Authorization: Bearer KEY'.")
        form.addRow("Port", self.port)
        form.addRow("", self.share)
        form.addRow("API key", self.key)
        self.body.addLayout(form)
        self._build_controls()

    def _build_controls(self) -> None:
        buttons = QHBoxLayout()
        self.start_button, self.stop_button = QPushButton("Start serving"), QPushButton("Stop")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        self.body.addLayout(buttons)
        self.status = Note()
        self.body.addWidget(self.status)
        self.address = QLineEdit()
        self.address.setReadOnly(True)
        self.throughput = QLabel("")
        self.snippet = QPlainTextEdit()
        self.snippet.setReadOnly(True)
        self.snippet.setMaximumHeight(170)
        copy = QPushButton("Copy the snippet")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.snippet.toPlainText()))
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        for label, widget in (("Address", self.address), ("Throughput", self.throughput), ("Call it", self.snippet)):
            self.body.addWidget(QLabel(label))
            self.body.addWidget(widget)
        self.body.addWidget(copy, 0, Qt.AlignmentFlag.AlignLeft)
        self.body.addWidget(QLabel("Request log"))
        self.body.addWidget(self.log, 1)

    # --- runs -------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        ticked = set(self.chosen_runs())
        self.runs.clear()
        for run in backend.servable_runs():
            metric = f", {run.metric_name} {run.metric:.3f}" if run.metric is not None else ""
            item = QListWidgetItem(f"{run.name}  ({run.method}{metric})")
            item.setData(Qt.ItemDataRole.UserRole, str(run.path))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if str(run.path) in ticked else Qt.CheckState.Unchecked)
            self.runs.addItem(item)
        if not self.runs.count():
            self.status.show_text("No finished run yet: train one first (its vector file is what is served).")

    def chosen_runs(self) -> list[str]:
        items = (self.runs.item(row) for row in range(self.runs.count()))
        return [item.data(Qt.ItemDataRole.UserRole) for item in items if item.checkState() == Qt.CheckState.Checked]

    # --- the server process -----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    def start(self) -> None:
        chosen = self.chosen_runs()
        if not chosen:
            self.status.show_text("Tick at least one run to serve.", "warning")
            return
        try:
            command = backend.serve_command(chosen, self.port.value(), self.share.isChecked())
        except UserError as error:
            self.status.show_text(str(error), "error")
            return
        self.process = QProcess(self)
        environment = QProcessEnvironment.systemEnvironment()
        environment.insert(backend.serve_key_variable(), self.key.text())
        self.process.setProcessEnvironment(environment)
        self.process.readyReadStandardOutput.connect(self._read_announcement)
        self.process.readyReadStandardError.connect(self._read_log)
        self.process.finished.connect(self._finished)
        self.log.clear()
        self.status.show_text(f"Loading {len(chosen)} run(s) and their base model…")
        self.process.start(command[0], command[1:])
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)

    def stop(self) -> None:
        """Stop the server (it finishes within a few seconds; then it is killed)."""
        self.timer.stop()
        if self.running:
            self.process.terminate()
            if not self.process.waitForFinished(8000):
                self.process.kill()
                self.process.waitForFinished(3000)

    def _read_announcement(self) -> None:
        for line in bytes(self.process.readAllStandardOutput()).decode(errors="replace").splitlines():
            try:
                announced = json.loads(line)
            except ValueError:
                continue
            self.url = announced["url"]
            self.address.setText(f"{self.url}/v1")
            self.status.show_text(f"Serving {len(announced['vectors'])} run(s) on {announced['base']}: the base model "
                                  f"answers too, as {announced['base']!r}.")
            self._previous = None
            self._get("/v1/models", self._models_arrived)
            self.timer.start()

    def _read_log(self) -> None:
        text = bytes(self.process.readAllStandardError()).decode(errors="replace").rstrip("\n")
        if text:
            self.log.appendPlainText(text)

    def _finished(self, code: int, exit_status) -> None:
        self.timer.stop()
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.address.clear()
        self.throughput.clear()
        failed = exit_status == QProcess.ExitStatus.NormalExit and code != 0 and not self.url  # it never served
        self.url = ""
        self.status.show_text("The server could not start; the log below says why." if failed
                              else "The server stopped.", "error" if failed else "info")

    # --- reading the server -----------------------------------------------------------------------------------
    def _get(self, path: str, on_reply) -> None:
        request = QNetworkRequest(QUrl(self.url + path))
        if self.key.text():
            request.setRawHeader(QByteArray(b"Authorization"), QByteArray(f"Bearer {self.key.text()}".encode()))
        reply = self.network.get(request)
        reply.finished.connect(lambda: self._arrived(reply, on_reply))

    @staticmethod
    def _arrived(reply: QNetworkReply, on_reply) -> None:
        if reply.error() == QNetworkReply.NetworkError.NoError:
            on_reply(bytes(reply.readAll()).decode(errors="replace"))
        reply.deleteLater()

    def _models_arrived(self, text: str) -> None:
        models = json.loads(text)["data"]
        served = [model for model in models if model.get("parent")] or models
        self.snippet.setPlainText(snippets(self.url, served[0], bool(self.key.text()), backend.serve_key_variable()))

    def _poll(self) -> None:
        if self.url:
            self._get("/metrics", self._metrics_arrived)

    def _metrics_arrived(self, text: str) -> None:
        requests, tokens, running = metric_totals(text)
        now = time.monotonic()
        if self._previous is not None:
            seconds = max(now - self._previous[0], 1e-6)
            self.throughput.setText(f"{requests:,.0f} requests · {(requests - self._previous[1]) / seconds:.1f} "
                                    f"requests/s · {(tokens - self._previous[2]) / seconds:.1f} tokens/s · "
                                    f"{running:.0f} answer(s) being generated")
        self._previous = (now, requests, tokens)
