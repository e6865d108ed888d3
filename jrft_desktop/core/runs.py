"""Run folders: what they hold, who may write them (a lock), and resumable checkpoints."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch

from .config import RunConfig
from .errors import ArtifactError, UserError
from .paths import atomic_directory, atomic_write, atomic_write_text

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
VECTOR_NAME = "vector"  # vector.safetensors + vector.json
BEST_FILE = "best.safetensors"
CHECKPOINT_DIR = "checkpoint"
LOCK_FILE = "run.lock"


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
        return RunConfig.from_json(saved.read_text(encoding="utf-8"))
    if config is None:
        raise UserError("A new run needs a configuration.")
    if saved.exists() or (run_dir / CHECKPOINT_DIR).exists():
        raise ArtifactError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another output folder."
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise ArtifactError(f"The output {run_dir} is a file, not a folder.")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, config.to_json() + "\n")
    except OSError as error:
        raise ArtifactError(f"Cannot write to the output folder {run_dir}: {error.strerror or error}.") from None
    return config


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """One writer per run folder. A lock left by a dead process on this host is taken over."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def __enter__(self) -> RunLock:
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale():
                    raise ArtifactError(f"Another process is training in {self.path.parent} (see {LOCK_FILE}).")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(owner, handle)
            self.held = True
            return self
        raise ArtifactError(f"Could not lock {self.path.parent}.")

    def _stale(self) -> bool:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return True  # a lock its writer never finished writing
        same_host = owner.get("host") == socket.gethostname()
        return same_host and not _process_alive(int(owner.get("pid", -1)))

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def save_state_file(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    cpu = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    atomic_write(path, lambda temp: save_file(cpu, str(temp)))


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def save_checkpoint(run_dir: Path, model_state: dict, optimizer: torch.optim.Optimizer, trainer_state: dict) -> Path:
    """Model and optimizer tensors in safetensors, the rest in JSON; the folder appears whole or not at all."""
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
        (temp / "trainer.json").write_text(json.dumps(payload, sort_keys=True), encoding="utf-8")
    return target


def load_checkpoint(run_dir: Path, optimizer: torch.optim.Optimizer) -> tuple[dict, dict] | None:
    """(model state, trainer state), with the optimizer restored in place; None when there is no checkpoint."""
    from safetensors.torch import load_file

    folder = Path(run_dir) / CHECKPOINT_DIR
    if not (folder / "trainer.json").is_file():
        return None
    try:
        tensors = load_file(str(folder / "state.safetensors"))
        trainer_state = json.loads((folder / "trainer.json").read_text(encoding="utf-8"))
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
