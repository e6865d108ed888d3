"""Every place the app reads or writes on disk, and atomic writes.

`JRFT_HOME` overrides the root (tests point it at a temporary folder).

An atomic write builds the new file (or folder) under a temporary name beside the target, fsyncs it and renames
it into place, so a reader, a crash or a kill sees the old version or the new one, never a part. Temporary names
carry the writer's pid; the next write to the same target removes the leftovers of writers that died. A write
that fails for a reason the user can fix (a full disk, a read-only folder) is an `ArtifactError` saying so."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from .errors import ArtifactError

APP_NAME = "jrft-desktop"
HOME_ENV = "JRFT_HOME"
CACHE_ENV = "JRFT_CACHE"


def data_root() -> Path:
    override = os.environ.get(HOME_ENV)
    return Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def runs_dir() -> Path:
    return data_root() / "runs"


def new_run_dir(label: str) -> Path:
    """A new, empty folder under the runs folder, `<timestamp>-<label>[-N]`, created here so that two processes
    (two app windows, the app and the CLI) starting at the same second never get the same one."""
    base = runs_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}"
    candidate, number = base, 2
    while True:
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate, number = base.with_name(f"{base.name}-{number}"), number + 1
        except OSError as error:
            raise ArtifactError(f"Cannot make a run folder in {base.parent}: {folder_problem(error)}.") from None


def cache_dir() -> Path:
    """Things the app can make again (the bundled decoder's weights, converted once from its GGUF file).
    `JRFT_CACHE` moves it; under `JRFT_HOME` it is that folder's `cache`."""
    override = os.environ.get(CACHE_ENV) or (os.environ.get(HOME_ENV) and str(Path(os.environ[HOME_ENV]) / "cache"))
    return Path(override) if override else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override) / "config"
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def resources_dir() -> Path:
    """The icons, themes, sample data and .desktop file (package data `jrft_desktop.resources`). A wheel and the
    PyInstaller folder hold them inside the package, jrft_desktop/resources/; the source tree (a checkout, an
    editable install) keeps them in the top-level resources/ folder, which pyproject.toml maps into the package."""
    package = Path(__file__).resolve().parent.parent
    inside = package / "resources"
    return inside if inside.is_dir() else package.parent / "resources"


def sample_data_dir() -> Path:
    return resources_dir() / "sample"


def xdg_data_home() -> Path:
    """Where freedesktop.org menus look for the user's own applications and icons (Linux and other Unixes)."""
    configured = os.environ.get("XDG_DATA_HOME", "")
    return Path(configured) if os.path.isabs(configured) else Path.home() / ".local" / "share"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF):  # some file systems cannot sync a folder; nothing lost
            raise
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else (or this system cannot tell): assume it runs
        return True
    return True


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files or folders for `path` left by writers that died (killed mid-write)."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)\..*\.tmp")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return
    for sibling in siblings:
        found = pattern.fullmatch(sibling.name)
        if found and not process_alive(int(found[1])):
            if sibling.is_dir():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)


def disk_problem(error: BaseException) -> str | None:
    """Why a write failed, in words a user can act on; None when the error is not about the disk."""
    code = getattr(error, "errno", None) if isinstance(error, OSError) else None
    if code is None:  # safetensors reports the OS error inside its own message: "... (os error 28)"
        found = re.search(r"\(os error (\d+)\)", str(error))
        code = int(found[1]) if found else None
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full; free some space and try again"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is read-only (no permission to write there); choose another folder"
    return None


def folder_problem(error: OSError) -> str:
    """Why a folder could not be made, in words a user can act on: `disk_problem`'s, or the file system's refusal
    (a virtual file system such as /proc answers 'No such file or directory')."""
    return disk_problem(error) or (f"the folder cannot be made there ({error.strerror or error}); choose a folder "
                                   "on a disk you can write to")


def make_folder(path: Path, what: str = "the output folder") -> None:
    """Make `path` and its parents (nothing when they exist); any failure is one ArtifactError naming `what`."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ArtifactError(f"Cannot write to {what} {path}: {folder_problem(error)}.") from None


def _write_error(path: Path, error: BaseException) -> ArtifactError | None:
    problem = disk_problem(error)
    return ArtifactError(f"Cannot write {path}: {problem}.") if problem else None


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temp_path)`, fsync it, then rename over `path`: readers see the old file or the new one."""
    path = Path(path)
    temp = None
    make_folder(path.parent, "the folder")
    try:
        _remove_stale_temps(path)
        fd, temp_name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
        temp = Path(temp_name)
        write(temp)  # after it: writers that replace the file (safetensors' save_file) make it 0600 again
        temp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any other file
        _fsync_file(temp)
        os.replace(temp, path)
        _fsync_dir(path.parent)
    except BaseException as error:
        if temp is not None:
            temp.unlink(missing_ok=True)
        clear = _write_error(path, error)
        if clear is not None:
            raise clear from None
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, data: object) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _previous(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def recover_directory(path: Path) -> None:
    """Finish or undo a folder replacement that a crash interrupted: the old folder moved aside and the new one
    not yet in place puts the old one back; both present drops the old one."""
    path, previous = Path(path), _previous(Path(path))
    if previous.is_dir():
        if path.exists():
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(previous, path)


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Build a folder under a temporary name beside `path` and rename it into place only when complete (every
    file in it fsynced first). Replacing an existing folder takes two renames; `recover_directory` repairs a
    crash between them."""
    path = Path(path)
    temp = None
    make_folder(path.parent, "the folder")
    try:
        recover_directory(path)
        _remove_stale_temps(path)
        temp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
        temp.chmod(0o777 & ~_umask())
        yield temp
        for file in sorted(temp.rglob("*")):
            if file.is_file():
                _fsync_file(file)
        _fsync_dir(temp)
        if path.exists():
            previous = _previous(path)
            os.replace(path, previous)
            os.replace(temp, path)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(temp, path)
        _fsync_dir(path.parent)
    except BaseException as error:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        clear = _write_error(path, error)
        if clear is not None:
            raise clear from None
        raise
