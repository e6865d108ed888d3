"""Run folders: what they hold, who may write them (a lock), resumable checkpoints, and where a run stands.

torch is imported only by the functions that save or load tensors: reading a folder's status does not need it
(the desktop app lists its runs before torch has loaded)."""

from __future__ import annotations

import errno
import json
import os
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .config import RunConfig
from .errors import ArtifactError, UserError
from .paths import (atomic_directory, atomic_write, atomic_write_text, disk_problem, make_folder, process_alive,
                    recover_directory)

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
VECTOR_NAME = "vector"  # vector.safetensors + vector.json
VECTOR_FILE = f"{VECTOR_NAME}.safetensors"
BEST_FILE = "best.safetensors"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE = "trainer.json"  # in CHECKPOINT_DIR: the step, the history, the optimizer's settings
LOCK_FILE = "run.lock"
AUDIT_FILE = "audit.json"  # what the privacy audit found (core/audit/leakage.py)


def require_folder(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise ArtifactError(f"The output {run_dir} is a file, not a folder.")


def _as_planned(text: str) -> RunConfig:
    """A saved run's config, as it was planned: one saved before runs trained to convergence by default (it has no
    epoch ceiling) and given neither epochs nor steps trained 3 epochs, and resumes so."""
    config = RunConfig.from_json(text)
    training = config.training
    if "max_epochs" in json.loads(text).get("training", {}) or training.epochs or training.max_steps:
        return config
    return replace(config, training=replace(training, epochs=3.0))


def prepare_run_dir(run_dir: Path, config: RunConfig | None, resume: bool) -> RunConfig:
    """Check the folder fits the request and return the config to run (the saved one when resuming)."""
    run_dir = Path(run_dir)
    saved = run_dir / CONFIG_FILE
    if resume:
        if not saved.is_file():
            raise ArtifactError(f"Nothing to resume: {run_dir} holds no run (no {CONFIG_FILE}).")
        metrics = run_dir / METRICS_FILE
        if metrics.is_file() and json.loads(metrics.read_text(encoding="utf-8")).get("status") == "completed":
            raise ArtifactError(f"The run in {run_dir} already finished; there is nothing to resume.")
        return _as_planned(saved.read_text(encoding="utf-8"))
    if config is None:
        raise UserError("A new run needs a configuration.")
    if saved.exists() or (run_dir / CHECKPOINT_DIR).exists():
        raise ArtifactError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another output folder."
        )
    require_folder(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, config.to_json() + "\n")
    except OSError as error:
        raise ArtifactError(f"Cannot write to the output folder {run_dir}: {error.strerror or error}.") from None
    return config


def _try_os_lock(fd: int) -> bool | None:
    """Take the OS lock on an open file without waiting: True when taken, False when another process holds it,
    None when this file system has no locks. The OS drops the lock when its process ends, however it ends."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # Windows
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except (BlockingIOError, PermissionError):  # EAGAIN / EWOULDBLOCK, or EACCES (Windows)
        return False
    except OSError as error:  # EDEADLK: Windows gave up waiting; anything else: no locks here (ENOLCK, ...)
        return False if error.errno == errno.EDEADLK else None
    return True


class RunLock:
    """One writer per run folder: an OS lock held on `run.lock` while training. A process that dies (even by
    SIGKILL) loses its lock with it, so a dead process never leaves a folder stuck; the file names the holder
    for the message. Where the file system has no locks, a lock naming a dead process on this host is stale."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        require_folder(self.path.parent)
        make_folder(self.path.parent)  # the first write of a run: a folder that cannot be made is refused here
        try:
            while self.fd is None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                taken = _try_os_lock(fd)
                if taken is None:
                    taken = not self._holder_alive()
                if not taken:
                    os.close(fd)
                    raise ArtifactError(f"Another process is training in {self.path.parent}{self._holder_text()}; "
                                        "wait for it to finish, or choose another output folder.")
                if self._same_file(fd):
                    self.fd = fd
                else:  # the previous holder removed the file between our open and our lock: lock the new one
                    os.close(fd)
            os.ftruncate(self.fd, 0)
            os.write(self.fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        except OSError as error:
            self.__exit__()
            problem = disk_problem(error)
            if problem is None:
                raise
            raise ArtifactError(f"Cannot write to the output folder {self.path.parent}: {problem}.") from None
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def _owner(self) -> dict:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def _holder_alive(self) -> bool:
        """For file systems without locks: whether the process named in the file still runs."""
        owner = self._owner()
        if "pid" not in owner:
            return False  # empty or half-written: its writer died before it began
        if owner.get("host") != socket.gethostname():
            return True  # a process on another machine cannot be checked from here
        return owner["pid"] != os.getpid() and process_alive(int(owner["pid"]))

    def _holder_text(self) -> str:
        owner = self._owner()
        return f" (pid {owner['pid']} on {owner.get('host', '?')})" if "pid" in owner else ""

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        if os.name == "nt":  # Windows cannot remove a file that is still open
            os.close(self.fd)
            self.path.unlink(missing_ok=True)
        else:  # removed while still locked, so nobody locks the old file after we let go
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
        self.fd = None


def is_locked(run_dir: Path) -> bool:
    """Whether a process is training in `run_dir` right now."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        taken = _try_os_lock(fd)
        if taken is None:
            return RunLock(run_dir)._holder_alive()
        return not taken
    finally:
        os.close(fd)  # closing drops a lock taken just now


def save_state_file(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    cpu = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    atomic_write(path, lambda temp: save_file(cpu, str(temp)))


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def save_checkpoint(run_dir: Path, model_state: dict, optimizer: torch.optim.Optimizer, trainer_state: dict) -> Path:
    """Model and optimizer tensors in safetensors, the rest in JSON; the folder appears whole or not at all."""
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.{name}": tensor for name, tensor in model_state.items()}
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    target = Path(run_dir) / CHECKPOINT_DIR
    with atomic_directory(target) as temp:
        save_file(tensors, str(temp / "state.safetensors"))
        payload = {**trainer_state, "optimizer_param_groups": optimizer_state["param_groups"]}
        (temp / CHECKPOINT_STATE).write_text(json.dumps(payload, sort_keys=True), encoding="utf-8")
    return target


def load_checkpoint(run_dir: Path, optimizer: torch.optim.Optimizer) -> tuple[dict, dict] | None:
    """(model state, trainer state), with the optimizer restored in place; None when there is no checkpoint."""
    from safetensors.torch import load_file

    folder = Path(run_dir) / CHECKPOINT_DIR
    recover_directory(folder)  # a crash while replacing the checkpoint left the previous one aside
    if not (folder / CHECKPOINT_STATE).is_file():
        return None
    try:
        tensors = load_file(str(folder / "state.safetensors"))
        trainer_state = json.loads((folder / CHECKPOINT_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ArtifactError(f"The checkpoint in {folder} is damaged ({error}).") from None
    model_state = {name[len("model."):]: t for name, t in tensors.items() if name.startswith("model.")}
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": trainer_state.pop("optimizer_param_groups")})
    return model_state, trainer_state


# --- where a run stands ---------------------------------------------------------------------------------------
COMPLETED, EARLY_STOPPED, STOPPED, INCOMPLETE = "completed", "early-stopped", "stopped", "incomplete"


@dataclass(frozen=True)
class RunSummary:
    """What a run folder says about its run, read from its files alone (nothing is loaded)."""

    path: Path
    name: str
    created: float  # seconds since the epoch (when its config.json was written)
    method: str
    data: str  # the training file's name
    status: str  # COMPLETED or EARLY_STOPPED (metrics.json written), STOPPED (a checkpoint to resume), INCOMPLETE
    metric_name: str | None
    metric: float | None
    trainable_params: int | None
    steps: str  # "120", or "40 of 400" for a stopped run with a step limit
    has_vector: bool
    metrics: dict = field(default_factory=dict)  # metrics.json, or a stopped run's last evaluation

    @property
    def resumable(self) -> bool:
        return self.status == STOPPED


def read_json(path: Path):
    """The JSON in `path`, or None when it is missing or unreadable (a run being written, a damaged file)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_audit(run_dir: Path) -> dict | None:
    """What the privacy audit of the run found (audit.json), None before it was audited."""
    found = read_json(Path(run_dir) / AUDIT_FILE)
    return found if isinstance(found, dict) else None


def checkpoint_state(run_dir: Path) -> dict | None:
    """The checkpoint's trainer state (step, history, ...), or None without a readable checkpoint."""
    state = read_json(Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_STATE)
    return state if isinstance(state, dict) else None


def summarize_run(run_dir: Path) -> RunSummary | None:
    """Where the run in `run_dir` stands; None for a folder that holds no run (no readable config.json)."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / CONFIG_FILE)
    if not isinstance(config, dict):
        return None
    try:
        run_config = RunConfig.from_dict(config)
    except UserError:
        return None
    metrics = read_json(run_dir / METRICS_FILE) or {}
    training = run_config.training
    if metrics:
        status = metrics.get("status", COMPLETED)
        metric_name = metrics.get("metric")
        steps = str(metrics.get("train_steps", ""))
    else:
        state = checkpoint_state(run_dir)
        status = STOPPED if state else INCOMPLETE
        evals = [entry["eval"] for entry in (state or {}).get("history", []) if "eval" in entry]
        metric_name = (training.metric if training.metric != "auto" else next(iter(evals[-1]))) if evals else None
        metrics = dict(evals[-1]) if evals else {}
        steps = f"{state['step']}" if state else "0"
    if training.max_steps and status == STOPPED:
        steps = f"{steps} of {training.max_steps}"
    return RunSummary(
        path=run_dir, name=run_dir.name, created=(run_dir / CONFIG_FILE).stat().st_mtime,
        method=metrics.get("method", run_config.method.name), data=Path(run_config.data.train).name,
        status=status, metric_name=metric_name, metric=metrics.get(metric_name) if metric_name else None,
        trainable_params=metrics.get("trainable_params"), steps=steps,
        has_vector=(run_dir / VECTOR_FILE).is_file(), metrics=metrics,
    )


def list_runs(root: Path) -> list[RunSummary]:
    """Every run in the folders of `root`, newest first (hidden folders and folders without a run left out)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = (summarize_run(folder) for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith("."))
    return sorted((run for run in found if run is not None), key=lambda run: run.created, reverse=True)


def load_history(run_dir: Path) -> list[dict]:
    """Loss, learning rate and evaluations per step: history.json, or the checkpoint's for a stopped run."""
    history = read_json(Path(run_dir) / HISTORY_FILE)
    if isinstance(history, list):
        return history
    return (checkpoint_state(run_dir) or {}).get("history", [])
