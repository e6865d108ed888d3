"""Screenshots of the bundled decoder on the Model page, and the memory estimate on the Method page (SLaSh on
SmolLM2-135M-Instruct with the bundled SST-2 sample). Nothing trains; the first run converts the decoder's GGUF file
(about 20 s) unless JRFT_CACHE points at a cache that has it.

    Xvfb :99 -screen 0 1400x900x24 &
    DISPLAY=:99 .venv/bin/python docs/screenshots/take_decoder_screenshots.py
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("JRFT_HOME", tempfile.mkdtemp(prefix="jrft-screenshots-"))

from take_screenshots import open_window, read_sample, save

from jrft_desktop.gui.self_test import wait_until


def main() -> int:
    app, window = open_window()
    model = window.model_page
    model.choose_bundled_decoder()
    wait_until(window, lambda: model.info is not None and model.info.causal, 180, "describe the bundled decoder")
    save(window, "16-model-decoder")
    read_sample(window)
    method = window.method_page
    method.choose_preset("SLaSh d=1024 (paper)")
    method.training.set_steps(150)
    method.training.max_length_spin.setValue(64)
    method.training.batch_spin.setValue(16)
    wait_until(window, lambda: method.plan is not None and not method.busy, 120, "count the parameters")
    save(window, "17-method-decoder-memory")
    app.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
