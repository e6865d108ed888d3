"""Page 8: a finished run served from the app: `jrft serve` in a process of its own, its address, a snippet that
works as copied, the request log and throughput; closing the window stops the server."""

import contextlib
import io

import httpx
import pytest
from PySide6.QtCore import QProcess, Qt
from test_history_page import make_run

pytestmark = pytest.mark.usefixtures("one_thread")
RUN = "20250101-100000-slash"


def test_a_run_is_served_and_closing_the_app_stops_it(qtbot, window, tiny_models, sst2_200):
    make_run(RUN, tiny_models["bert"], sst2_200, d=32)
    page = window.serve_page
    window.show_page(page)  # the list is read as the page opens
    assert page.runs.count() == 1 and RUN in page.runs.item(0).text()
    page.start()
    assert "Tick at least one run" in page.status.text()
    page.runs.item(0).setCheckState(Qt.CheckState.Checked)
    page.port.setValue(0)  # a free port
    page.start()
    qtbot.waitUntil(lambda: bool(page.url), timeout=120_000)
    assert page.address.text() == f"{page.url}/v1" and "Serving 1 run(s)" in page.status.text()
    qtbot.waitUntil(lambda: "/predict" in page.snippet.toPlainText(), timeout=20_000)

    code = page.snippet.toPlainText().split("\n\n", 1)[1]  # the Python half, run as a user would paste it
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})  # noqa: S102 - the page's own snippet
    assert "score" in printed.getvalue()
    answer = httpx.post(f"{page.url}/predict", json={"model": RUN, "inputs": "a fine film"}, timeout=30)
    assert answer.status_code == 200 and {item["label"] for item in answer.json()} == {"0", "1"}
    qtbot.waitUntil(lambda: "POST /predict 200" in page.log.toPlainText(), timeout=20_000)
    qtbot.waitUntil(lambda: "requests/s" in page.throughput.text(), timeout=20_000)

    process, url = page.process, page.url
    window.close()  # the app's closing stops the server
    assert process.state() == QProcess.ProcessState.NotRunning
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
