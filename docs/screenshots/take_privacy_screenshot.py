"""Screenshot 21 of the Results page: the privacy check of a finished run, clicked and finished in the app (its
reading in plain words and its figures under the summary).

The run is one trained with audit canaries, e.g. a run of `benchmarks/audit_sst2.py` (SLaSh at ε = 8 on SST-2 with
1,000 canaries); its earlier audit.json is set aside first, so that the check runs in the app.

    Xvfb :99 -screen 0 1400x900x24 &
    DISPLAY=:99 .venv/bin/python docs/screenshots/take_privacy_screenshot.py /tmp/audit_sst2/slash-ε8
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("JRFT_HOME", tempfile.mkdtemp(prefix="jrft-screenshots-"))

from PySide6.QtWidgets import QApplication
from take_screenshots import open_window

from jrft_desktop.core.runs import AUDIT_FILE
from jrft_desktop.gui.self_test import wait_until

OUT = Path(__file__).resolve().parent
SIZE = (1380, 900)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished run trained with --audit-canaries")
    args = parser.parse_args()
    earlier = args.run / AUDIT_FILE
    if earlier.is_file():
        earlier.rename(earlier.with_suffix(".json.before"))
    app, window = open_window(SIZE)
    results = window.results_page
    window.show_page(results)
    results.open_run(args.run)
    wait_until(window, lambda: results.confusion is not None and not results.busy, 300, f"open {args.run.name}")
    results.privacy_check.button.click()
    wait_until(window, lambda: not results.privacy_check.busy, 900, "check privacy")
    QApplication.processEvents()
    window.grab().save(str(OUT / "21-results-privacy.png"))
    print("saved 21-results-privacy.png", flush=True)
    window.close()
    app.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
