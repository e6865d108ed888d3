"""`jrft` refuses a numeric setting outside its valid range, from a flag or a `--config` file, and an output folder
that cannot be made (a read-only folder, a virtual file system): exit status 2, one line on stderr, no traceback,
nothing written. The help shows every number's range."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from file_faults import read_only

from jrft_desktop.cli import build_parser, main, train_flags
from jrft_desktop.core import ranges

FAST = ["--max-steps", "2", "--max-length", "32", "--batch-size", "8", "--device", "cpu"]
VIRTUAL = Path("/proc/jrft-no-such-folder")  # procfs makes no folders, whoever asks
needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")


def _files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def refused(argv, capfd) -> str:
    """Run `jrft argv` in-process; its one-line error (exit status 2, no traceback, nothing on stdout)."""
    capfd.readouterr()
    try:
        status = main([str(arg) for arg in argv])
    except SystemExit as stop:  # argparse's own refusals
        status = stop.code
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert "Traceback" not in err and len(lines) == 1 and out == "", err
    return lines[0]


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.setenv("JRFT_HOME", str(tmp_path / "home"))
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def _train(tiny_models, data, output, *extra) -> list:
    return ["train", "--data", data, "--model", tiny_models["bert"], *FAST, *extra, "--output", output]


@pytest.mark.parametrize(("flags", "message"), [
    (["--lr", "-0.01"], "error: The learning rate must be a positive number (got -0.01); leave it unset for the "
                        "method's default."),
    (["--lr", "0"], "error: The learning rate must be a positive number (got 0.0)"),
    (["--lr", "nan"], "error: The learning rate must be a positive number (got nan)"),
    (["--lr", "inf"], "error: The learning rate must be a positive number, not infinite (got inf)"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--batch-size", "0"], "error: batch_size must be at least 1 (got 0)."),
    (["--eval-every", "0"], "error: eval_every must be at least 1 (got 0)."),
    (["--checkpoint-every", "0"], "error: checkpoint_every must be at least 1 (got 0)."),
    (["--weight-decay", "-0.1"], "error: weight_decay must be at least 0 (got -0.1)."),
    (["--warmup-ratio", "-0.1"], "error: warmup_ratio must be between 0 and 1 (got -0.1)."),
    (["--warmup-ratio", "1.5"], "error: warmup_ratio must be between 0 and 1 (got 1.5)."),
    (["--gradient-accumulation", "0"], "error: gradient_accumulation must be at least 1 (got 0)."),
    (["--early-stopping", "0"], "error: early_stopping_patience must be at least 1 (got 0)."),
    (["--seed", "-1"], "error: seed must be a whole number between 0 and 4,294,967,295 (got -1)."),
    (["--max-length", "0"], "error: max_length must be at least 8 (got 0)."),
    (["--validation-fraction", "0"], "error: validation_fraction must be between 0 and 1, both excluded (got 0.0)."),
    (["--max-train-rows", "0"], "error: max_train_rows must be at least 1 (got 0)."),
    (["--method", "lora", "--rank", "0"], "error: rank must be a positive whole number (got 0)."),
    (["--projection-seed", "-3"], "error: projection_seed must be a whole number between 0 and 4,294,967,295"),
    (["--epsilon", "-2"], "error: ε must be a positive number (got -2.0); smaller is more private"),
    (["--epsilon", "3", "--delta", "2"], "error: δ must be between 0 and 1, both excluded (got 2.0)"),
    (["--epsilon", "3", "--max-grad-norm", "0"], "error: The clipping norm C must be a positive number (got 0.0)"),
    (["--noise-multiplier", "-1"], "error: The noise multiplier σ must be a positive number (got -1.0)"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_a_flag_out_of_range_is_one_line(flags, message, tiny_models, sst2_200, work, capfd):
    assert message in refused(_train(tiny_models, sst2_200, work / "run", *flags), capfd)
    assert _files(work) == []  # no run folder


@pytest.mark.parametrize(("settings", "message"), [
    ({"training": {"lr": 0}}, "error: The learning rate must be a positive number (got 0)"),
    ({"training": {"lr": "3e-2"}}, "error: The learning rate must be a positive number (got '3e-2')"),
    ({"training": {"batch_size": 0}}, "error: batch_size must be at least 1 (got 0)."),
    ({"training": {"batch_size": 8.5}}, "error: batch_size must be a whole number, at least 1 (got 8.5)."),
    ({"training": {"eval_every": 0, "checkpoint_every": 0}}, "error: eval_every must be at least 1 (got 0)."),
    ({"training": {"weight_decay": -1}}, "error: weight_decay must be at least 0 (got -1)."),
    ({"method": {"name": "slash", "d": 0}}, "error: d must be a positive whole number (got 0)."),
    ({"privacy": {"epsilon": 0}}, "error: ε must be a positive number (got 0)"),
], ids=lambda value: json.dumps(value) if isinstance(value, dict) else None)
def test_a_config_file_out_of_range_is_one_line(settings, message, tiny_models, sst2_200, work, tmp_path, capfd):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(settings), encoding="utf-8")
    assert message in refused(_train(tiny_models, sst2_200, work / "run", "--config", config), capfd)
    assert _files(work) == []


def test_a_bad_config_file_is_refused_even_under_a_flag(tiny_models, sst2_200, work, tmp_path, capfd):
    """A file with lr 0 is refused as it is read, even when --lr would replace it: the file itself is wrong."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"training": {"lr": 0}}), encoding="utf-8")
    line = refused(_train(tiny_models, sst2_200, work / "run", "--config", config, "--lr", "0.05"), capfd)
    assert "The learning rate must be a positive number (got 0)" in line


def test_the_help_shows_every_numeric_range(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    shown = 0
    for flags, cls, name in train_flags():
        sentence = ranges.describe(cls, name)
        if sentence:
            assert sentence in text, (flags, sentence)
            shown += 1
    assert shown >= 20
    assert "--lr LR Learning rate." in text and "Must be a positive number." in text


@needs_proc
def test_an_output_folder_on_a_virtual_file_system_is_refused(tiny_models, sst2_200, work, capfd):
    output = VIRTUAL / "run"
    line = refused(_train(tiny_models, sst2_200, output), capfd)
    assert line == (f"error: Cannot write to the output folder {output}: the folder cannot be made there (No such "
                    "file or directory); choose a folder on a disk you can write to.")
    assert not VIRTUAL.exists() and _files(work) == []


def test_an_output_folder_inside_a_read_only_one_is_refused(tiny_models, sst2_200, work, capfd):
    locked = work / "locked"
    locked.mkdir(mode=0o500)
    with read_only(locked):
        line = refused(_train(tiny_models, sst2_200, locked / "runs" / "run"), capfd)
        assert f"Cannot write to the output folder {locked / 'runs' / 'run'}: the folder is read-only" in line
        assert list(locked.iterdir()) == []


@needs_proc
def test_a_runs_root_on_a_virtual_file_system_is_refused(work, monkeypatch, capfd):
    """`jrft demo` makes its run folder in the runs folder (JRFT_HOME): refused before the model is loaded."""
    monkeypatch.setenv("JRFT_HOME", str(VIRTUAL))
    line = refused(["demo", "--steps", "1"], capfd)
    assert line.startswith(f"error: Cannot make a run folder in {VIRTUAL / 'runs'}: the folder cannot be made there")


@needs_proc
def test_an_export_destination_on_a_virtual_file_system_is_refused(tiny_models, sst2_200, work, capfd):
    run = work / "run"
    assert main([str(arg) for arg in _train(tiny_models, sst2_200, run, "--d", "8")]) == 0
    before = _files(work)
    line = refused(["export", run, "--merged", VIRTUAL / "merged"], capfd)
    assert line.startswith(f"error: Cannot write to the folder {VIRTUAL}: the folder cannot be made there"), line
    assert _files(work) == before and not VIRTUAL.exists()


def test_a_real_process_says_it_in_one_line(tiny_models, sst2_200, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JRFT_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "jrft_desktop.cli",
                           *map(str, _train(tiny_models, sst2_200, tmp_path / "run", "--lr", "-1"))],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: The learning rate must be a positive number (got -1.0); leave it unset for the method's default."]
    assert not (tmp_path / "run").exists() and not (tmp_path / "home").exists()
