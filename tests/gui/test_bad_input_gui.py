"""The bad-input matrix where a desktop user can give the input: the page that reads it says what is wrong (the
core's own one-line message), Start then explains it in a dialog instead of training, and a run that fails while
training ends with a dialog and leaves no run folder behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from file_faults import fill_the_disk, read_only
from gui_helpers import choose_tiny_run, error_dialogs, train

from jrft_desktop.core import data, limits, paths
from jrft_desktop.core.config import TrainingSpec, DataSpec, MethodSpec, ModelSpec, RunConfig
from jrft_desktop.core.tasks import task_for
from jrft_desktop.core.errors import DataError
from jrft_desktop.core.events import FailedEvent
from jrft_desktop.core.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def only_dialog(qtbot, window, title: str):
    qtbot.waitUntil(lambda: bool(error_dialogs(window)), timeout=10_000)
    boxes = error_dialogs(window)
    assert len(boxes) == 1 and boxes[0].windowTitle() == title, [(b.windowTitle(), b.text()) for b in boxes]
    return boxes[0]


def start_is_refused(qtbot, window, message: str) -> None:
    """Start opens a 'Not ready to train' dialog naming the problem, and trains nothing."""
    window.show_page(window.train_page)
    window.train_page.start_button.setEnabled(True)  # as if clicked before the page greyed it out
    window.train_page.start_button.click()
    box = only_dialog(qtbot, window, "Not ready to train")
    assert message in box.text()
    box.accept()
    assert not window.train_page.running and not paths.runs_dir().exists()


def _write(path: Path, header: str | None, lines) -> Path:
    path.write_text("" if header is None else "\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def _texts_with(label: str):
    return lambda rows: [row.split("\t")[0] + "\t" + label for row in rows]


# case -> (file name, header, rows from the 200 SST-2 rows); None: the file does not exist
BAD_DATA = {
    "missing file": ("nope.tsv", None, None),
    "empty file": ("empty.tsv", None, lambda rows: []),
    "header only": ("header.tsv", "sentence\tlabel", lambda rows: []),
    "wrong delimiter": ("spaces.tsv", "sentence label", lambda rows: [row.replace("\t", " ") for row in rows]),
    "blank labels": ("blank.tsv", "sentence\tlabel", _texts_with("")),
    "NaN labels": ("nan.tsv", "sentence\tlabel", _texts_with("NaN")),
    "a single class": ("one.tsv", "sentence\tlabel", _texts_with("1")),
    # token data (the tag task)
    "tag column not a list": ("flat.jsonl", '{"tokens": ["Alice", "left"], "tags": ["B-person", "O"]}',
                              lambda rows: ['{"tokens": ["Bob"], "tags": "B-person"}']),
    "tokens and tags of different lengths": ("ragged.jsonl", '{"tokens": ["Alice"], "tags": ["B-person"]}',
                                             lambda rows: ['{"tokens": ["Bob"], "tags": ["O", "O"]}']),
    "an empty sentence": ("empty-sentence.jsonl", '{"tokens": ["Alice"], "tags": ["B-person"]}',
                          lambda rows: ['{"tokens": [], "tags": []}']),
    "a CoNLL file with one column": ("tokens.conll", "Alice", lambda rows: ["left", "", "Bob"]),
    # last: the row limit below makes it usable
    "too big for memory": ("big.tsv", "sentence\tlabel", lambda rows: rows),
}


def test_bad_data_files_are_explained_on_the_data_page_and_at_start(qtbot, window, tiny_models, sst2_200, tmp_path,
                                                                    monkeypatch):
    window.model_page.choose_folder(str(tiny_models["bert"]))
    qtbot.waitUntil(lambda: window.model_page.info is not None, timeout=60_000)
    page = window.data_page
    rows = sst2_200.read_text(encoding="utf-8").splitlines()[1:]
    for case, (name, header, make_rows) in BAD_DATA.items():
        source = tmp_path / name
        if make_rows is not None:
            _write(source, header, make_rows(rows))
        if case == "too big for memory":
            monkeypatch.setattr(data, "memory_limit", lambda: 64 * 1024)
        with pytest.raises(DataError) as core:
            spec = DataSpec(train=str(source))
            task_for(spec.task, spec.train).load_data(spec, 0)
        page.set_train(str(source))
        qtbot.waitUntil(lambda: bool(page.error), timeout=30_000)
        assert page.error == str(core.value), case  # the core's message, word for word
        assert page.status.kind == "error" and page.summary is None, case
        start_is_refused(qtbot, window, str(core.value))

    page.rows_spin.setValue(50)  # a row limit makes the big file usable: a sample read in one streaming pass
    qtbot.waitUntil(lambda: page.summary is not None, timeout=30_000)
    assert "read it in one streaming pass and kept a seeded random sample" in page.status.text()
    assert page.summary.train_rows == 50


def test_validation_labels_unseen_in_training(qtbot, window, sst2_200, tmp_path):
    unseen = _write(tmp_path / "unseen.tsv", "sentence\tlabel", [f"a sentence {i}\t{'7' if i % 2 else '1'}"
                                                                 for i in range(10)])
    page = window.data_page
    page.set_train(str(sst2_200))
    page.set_validation(str(unseen))
    qtbot.waitUntil(lambda: bool(page.error), timeout=30_000)
    assert "Label(s) '7' did not occur in the training data; known labels: '0', '1'." in page.error


@pytest.fixture
def t5_folder(tmp_path) -> Path:
    """An encoder-decoder, a family the app does not support."""
    from transformers import T5Config, T5Model

    folder = tmp_path / "t5"
    T5Model(T5Config(d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2, vocab_size=64)).save_pretrained(folder)
    return folder


def test_bad_models_are_explained_on_the_model_page_and_at_start(qtbot, window, t5_folder, tmp_path):
    page = window.model_page
    not_hub = "does not exist (and it is not a Hugging Face Hub id)"
    for choose, message in (
        (lambda: page.choose_folder(str(tmp_path / "gone")), f"gone {not_hub}"),
        (lambda: page.choose_folder(str(t5_folder)), "is a 't5' model; supported families:"),
        (lambda: page.choose_hub("not a valid id!"), "'not a valid id!' is neither a model folder here nor a valid "
                                                      "Hugging Face Hub id"),
    ):
        choose()
        qtbot.waitUntil(lambda: page.status.kind == "error", timeout=60_000)
        assert message in page.status.text() and page.info is None
        start_is_refused(qtbot, window, message)


def _fails_in_a_dialog(qtbot, window, message: str) -> FailedEvent:
    result = train(qtbot, window)
    assert isinstance(result, FailedEvent) and result.user_error, result
    box = only_dialog(qtbot, window, "Cannot train")
    assert message in box.text(), box.text()
    box.accept()
    assert not any(paths.runs_dir().iterdir())  # the failed run's folder is gone
    return result


def test_a_model_folder_without_a_tokenizer_fails_in_a_dialog(qtbot, window, tiny_models, sst2_200, tmp_path):
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_models["bert"] / name, folder / name)
    choose_tiny_run(qtbot, window, folder, sst2_200)
    _fails_in_a_dialog(qtbot, window, "has no tokenizer")


def test_an_absurd_d_fails_in_a_dialog(qtbot, window, tiny_models, sst2_200, monkeypatch):
    monkeypatch.setattr(limits, "memory_limit", lambda: 64 * 2**20)  # a machine with 128 MB
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200, steps=2, size=1_000_000)  # the largest d offered
    _fails_in_a_dialog(qtbot, window, "The random projections of slash for d = 1,000,000 would take about")


def test_a_full_disk_fails_in_a_dialog(qtbot, window, tiny_models, sst2_200, monkeypatch):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200, steps=2)
    fill_the_disk(monkeypatch)
    _fails_in_a_dialog(qtbot, window, "config.json: the disk is full; free some space and try again.")


def test_a_read_only_runs_folder_is_explained_at_start(qtbot, window, tiny_models, sst2_200):
    choose_tiny_run(qtbot, window, tiny_models["bert"], sst2_200, steps=2)
    paths.runs_dir().mkdir(parents=True)
    with read_only(paths.runs_dir()):
        window.show_page(window.train_page)
        window.train_page.start_button.click()
        box = only_dialog(qtbot, window, "Cannot train")
        assert f"Cannot make a run folder in {paths.runs_dir()}: the folder is read-only" in box.text()
        assert not window.train_page.running and not any(paths.runs_dir().iterdir())


def test_a_run_whose_vector_was_edited_is_refused_in_a_dialog(qtbot, window, tiny_models, sst2_200):
    run = paths.runs_dir() / "20250101-100000-slash"
    config = RunConfig(model=ModelSpec(str(tiny_models["bert"]), pooling="cls"),
                       data=DataSpec(train=str(sst2_200), max_length=32), method=MethodSpec(d=16),
                       training=TrainingSpec(max_steps=2, batch_size=8, device="cpu"))
    Trainer(config, run).run()
    sidecar = run / "vector.json"
    metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    metadata["label_names"] = ["positive", "negative"]
    sidecar.write_text(json.dumps(metadata), encoding="utf-8")

    window.results_page.open_run(run)
    box = only_dialog(qtbot, window, "Cannot load the trained model")
    assert "vector.json does not match the metadata inside vector.safetensors (it was edited)" in box.text()
    assert window.results_page.trained is None


def test_trust_remote_code_is_off_at_every_start_and_warns_while_on(qtbot, make_window, tiny_models):
    window = make_window()
    page = window.model_page
    page.choose_folder(str(tiny_models["bert"]))
    qtbot.waitUntil(lambda: page.info is not None, timeout=60_000)
    assert not page.trust_box.isChecked() and not page.model_spec().trust_remote_code and page.status.text() == ""
    page.trust_box.setChecked(True)
    qtbot.waitUntil(lambda: page.info is not None, timeout=60_000)
    assert page.model_spec().trust_remote_code
    assert page.status.kind == "warning" and "Trust remote code is on" in page.status.text()
    again = make_window()  # the next start: the choice of model is remembered, the trust is not
    assert not again.model_page.trust_box.isChecked()
