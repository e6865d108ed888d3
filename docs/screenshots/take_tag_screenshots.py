"""Screenshots of token classification: the Data page on WNUT-17 and the Results page of a finished tagging run.

Run under a virtual display, with the folder of a finished tag run (docs/benchmarks.md's WNUT-17 SLaSh run, or any
`jrft train --data train.conll ...`); runs and settings go to a temporary JRFT_HOME:

    Xvfb :99 -screen 0 1400x900x24 &
    DISPLAY=:99 .venv/bin/python docs/screenshots/take_tag_screenshots.py RUN_DIR
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("JRFT_HOME", tempfile.mkdtemp(prefix="jrft-screenshots-"))

from take_screenshots import open_window, save

from jrft_desktop.gui.self_test import wait_until

WNUT = Path(__file__).resolve().parents[3] / "shared" / "data" / "wnut17"
SENTENCE = "Paul Walker and Vin Diesel visited the Empire State Building in New York with Toyota"


def main(run_dir: str) -> int:
    app, window = open_window()

    data = window.data_page
    window.show_page(data)
    data.set_validation(str(WNUT / "validation.conll"))
    data.set_train(str(WNUT / "train.conll"))
    wait_until(window, lambda: data.summary is not None and not data.busy, 120, "read WNUT-17")
    save(window, "12-data-tokens")

    results = window.results_page
    window.show_page(results)
    results.open_run(run_dir)
    wait_until(window, lambda: results.trained is not None and not results.busy, 300, "load the run")
    results.try_edit.setText(SENTENCE)
    results.try_edit.setCursorPosition(0)
    results.try_text()
    wait_until(window, lambda: results.prediction is not None, 60, "find the entities")
    save(window, "13-results-entities")
    window.close()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
