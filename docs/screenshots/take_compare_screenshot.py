"""The Compare page's screenshot alone (10-compare.png): the bundled model on the bundled SST-2 sample, SLaSh, the
linear head, LoRA and full finetuning, each trained until its validation metric stops improving (at most the page's
default steps), the curve still rising at the end marked "not converged".

    Xvfb :99 -screen 0 1400x900x24 &
    DISPLAY=:99 .venv/bin/python docs/screenshots/take_compare_screenshot.py
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("JRFT_HOME", tempfile.mkdtemp(prefix="jrft-screenshots-"))

from take_screenshots import COMPARED, open_window, read_sample, save

from jrft_desktop.gui.self_test import wait_until


def main() -> int:
    app, window = open_window()
    wait_until(window, lambda: window.model_page.info is not None, 120, "describe the model")
    read_sample(window)
    compare = window.compare_page
    window.show_page(compare)
    wait_until(window, lambda: compare.run_button.isEnabled(), 60, "list the methods to compare")
    compare.choose(COMPARED)
    compare.curve_edit.setText("")
    compare.run_button.click()
    wait_until(window, lambda: compare.result is not None and not compare.running, 1800, "compare the methods")
    save(window, "10-compare")
    window.close()
    app.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
