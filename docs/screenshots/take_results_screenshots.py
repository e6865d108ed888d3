"""Screenshots 14 and 15 of the Results page, on the bundled model: the *Save merged model...* menu of a run with
the default (mean) pooling, and the confusion matrix of a 20-class run (AG News' four topics, each split into five
classes by the length of the text: `World-1` ... `Sci/Tech-5`).

Both runs are trained first with `jrft train` (100 steps on 2,000 rows each; give `--runs MEAN_RUN TOPICS_RUN`
to reuse finished ones), then opened on the Results page as History opens a run.

    Xvfb :99 -screen 0 1400x900x24 &
    DISPLAY=:99 .venv/bin/python docs/screenshots/take_results_screenshots.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("JRFT_HOME", tempfile.mkdtemp(prefix="jrft-screenshots-"))

import numpy as np
import pandas as pd
from PySide6.QtWidgets import QApplication

from jrft_desktop.gui.main_window import MainWindow
from jrft_desktop.gui.self_test import wait_until
from jrft_desktop.gui.settings import AppSettings

OUT = Path(__file__).resolve().parent
DATA = OUT.parents[2] / "shared" / "data"
SIZE = (1380, 860)
TRAIN = ["--max-train-rows", "2000", "--max-steps", "100"]


def topics20(folder: Path) -> tuple[Path, Path]:
    """AG News with 20 classes: the topic and the quintile of the text's word count."""
    paths = []
    for split, rows in (("train", 3000), ("test", 1000)):
        frame = pd.read_csv(DATA / "agnews" / f"{split}.tsv", sep="\t", dtype=str, keep_default_na=False)
        words = frame["text"].str.split().str.len()
        quintile = np.searchsorted(np.quantile(words, [0.2, 0.4, 0.6, 0.8]), words, side="right") + 1
        frame["label"] = frame["label"] + "-" + pd.Series(quintile, index=frame.index).astype(str)
        paths.append(folder / f"topics20_{split}.tsv")
        frame.sample(n=rows, random_state=0).to_csv(paths[-1], sep="\t", index=False)
    return paths[0], paths[1]


def train(output: Path, train_file: Path, validation: Path) -> Path:
    subprocess.run([sys.executable, "-m", "jrft_desktop.cli", "train", "--data", str(train_file), "--validation",
                    str(validation), *TRAIN, "--output", str(output)], check=True, stdout=subprocess.DEVNULL)
    return output


def open_results(window: MainWindow, run: Path) -> None:
    results = window.results_page
    window.show_page(results)
    results.open_run(run)
    wait_until(window, lambda: results.confusion is not None and not results.busy, 300, f"open {run.name}")


def save_screen(window: MainWindow, name: str) -> None:
    """The window's area of the screen, so that a popup menu over it is in the picture too."""
    QApplication.processEvents()
    frame = window.frameGeometry()
    screen = QApplication.primaryScreen()
    screen.grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height()).save(str(OUT / f"{name}.png"))
    print(f"saved {name}.png", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs=2, type=Path, metavar=("MEAN_RUN", "TOPICS_RUN"))
    args = parser.parse_args()
    if args.runs:
        mean_run, topics_run = args.runs
    else:
        work = Path(tempfile.mkdtemp(prefix="jrft-screenshot-runs-"))
        mean_run = train(work / "sst2-mean", DATA / "sst2" / "train.tsv", DATA / "sst2" / "test.tsv")
        topics_run = train(work / "agnews-topics20", *topics20(work))

    app = QApplication.instance() or QApplication(sys.argv)
    window = MainWindow(AppSettings())
    window.resize(*SIZE)
    window.show_on_screen()
    window.load_pages()

    open_results(window, mean_run)
    results = window.results_page
    results.merged_button.click()
    wait_until(window, lambda: results.merged_menu.isVisible(), 10, "open the merged-model menu")
    save_screen(window, "14-results-merged-forms")
    results.merged_menu.close()

    open_results(window, topics_run)
    save_screen(window, "15-confusion-many-classes")
    window.close()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
