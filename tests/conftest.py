"""Shared fixtures: an isolated app home, offline Hugging Face, tiny models, and the real data folder."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny_models import FAMILIES, build_tiny_model  # noqa: E402

from jrft_desktop.core.paths import sample_data_dir  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Runs and settings go to a temporary folder, never the user's."""
    monkeypatch.setenv("JRFT_HOME", str(tmp_path / "jrft-home"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: build_tiny_model(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run many times faster on one intra-op thread on this shared 2-core machine (and
    deterministically); modules that use them opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the project's real data folder {SHARED_DATA} is not here")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sst2_200(tmp_path_factory) -> Path:
    """The first 200 rows of the bundled SST-2 sample (real sentences, labels 0/1)."""
    lines = (sample_data_dir() / "sst2_train.tsv").read_text(encoding="utf-8").splitlines()
    target = tmp_path_factory.mktemp("data") / "sst2_200.tsv"
    target.write_text("\n".join(lines[:201]) + "\n", encoding="utf-8")
    return target


@pytest.fixture
def stop_at_step():
    """`make(step)`: a stop event and a trainer callback that sets it once that step is done (a user's Stop)."""
    from jrft_desktop.core.events import StepEvent

    def make(step: int):
        stop = threading.Event()

        def callback(event):
            if isinstance(event, StepEvent) and event.step == step:
                stop.set()

        return stop, callback

    return make
