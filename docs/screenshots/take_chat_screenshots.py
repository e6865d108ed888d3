"""Screenshots of a generate run: the Data page asking for identity.json's placeholders, the Results page's chat box
(the tuned SmolLM2 beside the base model) and the answers to the validation prompts at each evaluation (Samples).

Train the run first (about 3 minutes on a 2-core CPU; the README's shots used 81 of identity.json's 91 rows, the
other 10 held out as test questions), then take them:

    .venv/bin/jrft train --model bundled:SmolLM2-135M-Instruct --data ../shared/data/instruct/identity.json \\
        --fill name=Juniper --fill "author=JRFT Labs" --method slash --position intermediate --lr 0.1 \\
        --max-steps 120 --batch-size 8 --max-length 128 --eval-every 50 --output /tmp/smol-identity
    Xvfb :99 -screen 0 1400x900x24 &
    DISPLAY=:99 .venv/bin/python docs/screenshots/take_chat_screenshots.py /tmp/smol-identity
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("JRFT_HOME", tempfile.mkdtemp(prefix="jrft-screenshots-"))

from take_screenshots import open_window, save

from jrft_desktop.gui.self_test import wait_until

IDENTITY = Path(__file__).resolve().parents[3] / "shared" / "data" / "instruct" / "identity.json"
FILL = {"name": "Juniper", "author": "JRFT Labs"}
QUESTIONS = ("What should I call you?", "And who built you?")


def main() -> int:
    run_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/smol-identity")
    app, window = open_window()
    model = window.model_page
    model.choose_bundled_decoder()
    data = window.data_page
    window.show_page(data)
    data.set_train(str(IDENTITY))
    wait_until(window, lambda: data.preview is not None and not data.busy, 120, "read identity.json")
    for name, value in FILL.items():
        data.set_fill(name, value)
    wait_until(window, lambda: data.summary is not None and not data.busy, 120, "read the filled data")
    save(window, "18-data-placeholders")

    results = window.results_page
    window.open_results(str(run_dir))
    chat = results.chat
    wait_until(window, lambda: chat.trained is not None, 300, "load the trained model")
    chat.max_tokens_spin.setValue(60)
    chat.compare_check.setChecked(True)
    for question in QUESTIONS:
        chat.send(question)
        wait_until(window, lambda: not chat.busy, 600, "answer")
    chat.scroll.verticalScrollBar().setValue(0)  # from the first question
    save(window, "19-results-chat")
    results.tabs.setCurrentWidget(results.samples)
    save(window, "20-results-samples")
    app.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
