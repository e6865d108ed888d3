"""Nothing lost: real processes killed with SIGKILL mid-training and mid-export, locks left by dead processes,
two runs racing for one folder, and a disk that fills up.

A killed `jrft train` resumes from its last checkpoint and ends with exactly (bit for bit) the z, head, history and
metrics of an uninterrupted run with the same seed. A killed export leaves the previous file (or folder) or none,
never a part of one. A lock dies with its process."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from file_faults import fill_the_disk
from safetensors.torch import load_file

from jrft_desktop.cli import main
from jrft_desktop.core import paths, runs
from jrft_desktop.core.config import TrainingSpec, DataSpec, MethodSpec, ModelSpec, RunConfig
from jrft_desktop.core.errors import ArtifactError
from jrft_desktop.core.export.vector import read_vector
from jrft_desktop.core.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 150


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """One intra-op thread, as in this process (`one_thread`), so runs here and there are bit-identical."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1", "JRFT_HOME": str(tmp_path_factory.mktemp("jrft-home"))}


def train_args(tiny_models, sst2_200, output) -> list[str]:
    return ["train", "--data", str(sst2_200), "--model", str(tiny_models["bert"]), "--method", "slash", "--d", "32",
            "--pooling", "cls", "--max-steps", str(STEPS), "--batch-size", "8", "--eval-every", "50",
            "--checkpoint-every", "5", "--lr", "0.05", "--seed", "7", "--max-length", "32", "--device", "cpu",
            "--output", str(output)]


def jrft(env, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jrft_desktop.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the process ended before {what}: {process.communicate()[1][-2000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


def checkpoint_step(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / runs.CHECKPOINT_DIR / "trainer.json").read_text(encoding="utf-8"))["step"]
    except (OSError, ValueError):
        return None


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- SIGKILL mid-training, then --resume ------------------------------------------------------------------------


def test_sigkill_mid_training_then_resume_equals_an_uninterrupted_run(tiny_models, sst2_200, tmp_path, env,
                                                                       capfd):
    straight = tmp_path / "straight"
    assert main(train_args(tiny_models, sst2_200, straight)) == 0  # in this process, on one thread
    capfd.readouterr()

    run = tmp_path / "killed"
    process = jrft(env, *train_args(tiny_models, sst2_200, run))
    try:
        wait_for(lambda: (checkpoint_step(run) or 0) >= 10, process, "the second checkpoint")
    finally:
        kill(process)
    killed_at = checkpoint_step(run)
    assert 10 <= killed_at < STEPS and not (run / "metrics.json").exists(), "the run was not killed mid-training"
    assert (run / runs.LOCK_FILE).exists() and not runs.is_locked(run)  # left behind, but nobody holds it

    capfd.readouterr()
    assert main(["train", "--resume", "--output", str(run)]) == 0  # what `jrft train --resume` runs
    out, err = capfd.readouterr()
    assert f"note: resumed from step {killed_at}" in err and json.loads(out)["status"] == "completed"
    assert not (run / runs.LOCK_FILE).exists()

    for name in ("vector.safetensors", "best.safetensors"):
        expected, got = load_file(str(straight / name)), load_file(str(run / name))
        assert set(expected) == set(got) == {"projected.z", "head.weight", "head.bias"}
        for key in expected:
            assert torch.equal(expected[key], got[key]), f"{name}:{key} differs after the kill and resume"
    assert not torch.equal(load_file(str(run / "vector.safetensors"))["projected.z"], torch.zeros(32))
    history = json.loads((run / "history.json").read_text(encoding="utf-8"))
    assert history == json.loads((straight / "history.json").read_text(encoding="utf-8"))
    assert len([entry for entry in history if "loss" in entry]) == STEPS
    metrics, reference = (json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
                          for folder in (run, straight))
    for key in ("accuracy", "loss", "best_step", "train_steps"):
        assert metrics[key] == reference[key], key
    read_vector(run / "vector.safetensors")  # and it passes every integrity check


# --- locks ------------------------------------------------------------------------------------------------------


HOLD_LOCK = """
import sys, time
from jrft_desktop.core.runs import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_lock_dies_with_its_process(tiny_models, sst2_200, tmp_path, env):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        assert runs.is_locked(run_dir)
        owner = json.loads((run_dir / runs.LOCK_FILE).read_text(encoding="utf-8"))
        config = RunConfig(model=ModelSpec(str(tiny_models["bert"])),
                           data=DataSpec(train=str(sst2_200), max_length=32), method=MethodSpec(d=16),
                           training=TrainingSpec(max_steps=2, batch_size=8, device="cpu"))
        with pytest.raises(ArtifactError, match=f"Another process is training in .*pid {owner['pid']}"):
            Trainer(config, run_dir).run()
        assert sorted(p.name for p in run_dir.iterdir()) == [runs.LOCK_FILE]  # the holder's folder untouched
    finally:
        kill(holder)
    assert (run_dir / runs.LOCK_FILE).exists() and not runs.is_locked(run_dir)
    assert Trainer(config, run_dir).run().status == "completed"  # the dead process's lock is taken over
    assert not (run_dir / runs.LOCK_FILE).exists()


def test_without_os_locks_a_dead_pid_is_stale_and_another_host_is_respected(tmp_path, monkeypatch):
    """Some network file systems have no locks; then the pid and host in run.lock decide."""
    monkeypatch.setattr(runs, "_try_os_lock", lambda fd: None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / runs.LOCK_FILE
    lock.write_text(json.dumps({"pid": dead.pid, "host": "some-other-host"}))
    with pytest.raises(ArtifactError, match="Another process is training"):
        with runs.RunLock(tmp_path):
            pass
    assert lock.exists()
    import socket

    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with runs.RunLock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_two_processes_never_share_a_run_folder(tiny_models, sst2_200, tmp_path, env):
    run = tmp_path / "contested"
    args = train_args(tiny_models, sst2_200, run)
    args[args.index("--max-steps") + 1] = "12"
    racers = [jrft(env, *args) for _ in range(2)]
    results = [(racer.wait(timeout=300), *racer.communicate()) for racer in racers]
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [0, 2], results
    _, _, loser_err = next(result for result in results if result[0] == 2)
    line = loser_err.strip().splitlines()[-1]
    assert "Traceback" not in loser_err
    assert "Another process is training in" in line or "already holds a run" in line, line
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))  # the winner's run is whole
    assert metrics["status"] == "completed" and metrics["train_steps"] == 12
    read_vector(run / "vector.safetensors")


def test_new_run_folders_are_unique_across_threads():
    made: list[Path] = []
    threads = [threading.Thread(target=lambda: made.append(paths.new_run_dir("slash"))) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 12 and all(folder.is_dir() for folder in made)


# --- killed mid-export ------------------------------------------------------------------------------------------


HALF_WRITE_THEN_HANG = """
import os, sys, time
import safetensors.torch as st

real_save_file = st.save_file

def half_then_hang(tensors, filename, metadata=None):
    if sys.argv[1] not in os.path.basename(filename):
        return real_save_file(tensors, filename, metadata=metadata)
    data = st.save(tensors, metadata=metadata)
    with open(filename, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())
    print("half written", flush=True)
    time.sleep(600)

st.save_file = half_then_hang  # before transformers imports it
from jrft_desktop.cli import main
sys.exit(main(sys.argv[2:]))
"""


def killed_half_way_through(env, file_name: str, *args) -> None:
    """Run `jrft *args`, and SIGKILL it when it has written half of a safetensors file called like `file_name`."""
    process = subprocess.Popen([sys.executable, "-c", HALF_WRITE_THEN_HANG, file_name, *map(str, args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout.readline().strip() == "half written", process.stderr.read()[-2000:]
    finally:
        kill(process)


@pytest.fixture(scope="module")
def finished_run(tiny_models, sst2_200, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    args = train_args(tiny_models, sst2_200, run)
    args[args.index("--max-steps") + 1] = "12"
    assert main(args) == 0
    return run


def test_a_kill_mid_export_leaves_the_previous_folder(finished_run, tmp_path, env):
    merged = tmp_path / "merged"
    assert main(["export", str(finished_run), "--merged", str(merged)]) == 0
    previous = snapshot(merged)
    assert "model.safetensors" in previous and "jrft_manifest.json" in previous
    killed_half_way_through(env, "model.safetensors", "export", finished_run, "--merged", merged)
    assert snapshot(merged) == previous  # the previous one, whole
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".merged.")], "where did the killed export write?"

    assert main(["export", str(finished_run), "--merged", str(merged)]) == 0
    assert snapshot(merged) == previous  # the same run exports the same files
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".merged.")] == []  # the dead one's temp swept


def test_a_kill_while_writing_the_vector_leaves_none_and_resume_finishes(finished_run, tiny_models, sst2_200,
                                                                          tmp_path, env):
    run = tmp_path / "run"
    args = train_args(tiny_models, sst2_200, run)
    args[args.index("--max-steps") + 1] = "12"
    killed_half_way_through(env, ".vector.safetensors.", *args)
    assert not (run / "vector.safetensors").exists() and not (run / "metrics.json").exists()  # none
    assert checkpoint_step(run) == 10
    assert [p for p in run.iterdir() if p.name.startswith(".vector.safetensors.")], "no half-written temporary?"

    assert main(["train", "--resume", "--output", str(run)]) == 0
    tensors, _ = read_vector(run / "vector.safetensors")
    expected = load_file(str(finished_run / "vector.safetensors"))
    assert all(torch.equal(tensors[key], expected[key]) for key in expected)
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # the killed writer's temporary is swept


# --- a disk that fills up ---------------------------------------------------------------------------------------


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_resume_finishes(tiny_models, sst2_200, tmp_path,
                                                                             monkeypatch, capfd):
    """The disk fills up (the flush of the third checkpoint fails): the run stops with one clear line, the
    second checkpoint stays whole, and after space is freed --resume finishes the run."""
    run = tmp_path / "run"
    args = train_args(tiny_models, sst2_200, run)
    args[args.index("--max-steps") + 1] = "30"
    fill_the_disk(monkeypatch, after=2, name="trainer.json")
    capfd.readouterr()
    assert main(args) == 2
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert lines[-1] == f"error: Cannot write {run / runs.CHECKPOINT_DIR}: the disk is full; free some space and " \
                        "try again.", err
    assert checkpoint_step(run) == 10
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "config.json"]

    monkeypatch.undo()  # space freed
    assert main(["train", "--resume", "--output", str(run)]) == 0
    assert json.loads((run / "metrics.json").read_text(encoding="utf-8"))["train_steps"] == 30


def test_interrupted_folder_swap_is_repaired(tmp_path):
    """A crash between the two renames of a folder replacement leaves the old folder aside; it is put back."""
    target = tmp_path / "checkpoint"
    with paths.atomic_directory(target) as temp:
        (temp / "trainer.json").write_text("old")
    os.replace(target, tmp_path / ".checkpoint.old")  # the state a crash there leaves
    paths.recover_directory(target)
    assert (target / "trainer.json").read_text() == "old"
    with paths.atomic_directory(target) as temp:
        (temp / "trainer.json").write_text("new")
    assert (target / "trainer.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_disk_problems_are_named_whoever_reports_them():
    """Python's OSError, and safetensors' error, which carries the OS error in its text (seen on a full tmpfs)."""
    from safetensors import SafetensorError

    full = "the disk is full; free some space and try again"
    assert paths.disk_problem(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) == full
    assert paths.disk_problem(SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)")) == full
    assert paths.disk_problem(OSError(errno.EROFS, os.strerror(errno.EROFS))).startswith("the folder is read-only")
    assert paths.disk_problem(PermissionError(errno.EACCES, "denied")).startswith("the folder is read-only")
    assert paths.disk_problem(OSError(errno.ENOENT, "gone")) is None  # not the user's to fix: a bug, reported so
    assert paths.disk_problem(ValueError("bad value")) is None
