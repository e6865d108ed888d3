"""Real file-system faults for tests: a read-only folder (even for root) and a full disk."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from jrft_desktop.core import paths


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """Make `folder` read-only for this process: no write permission, or for root (whom permissions do not stop)
    the immutable attribute of ext4 and similar file systems."""
    folder.chmod(0o555)
    immutable = False
    try:
        if os.access(folder, os.W_OK):
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
            if not immutable:
                pytest.skip("cannot make a folder read-only for this user here (root without chattr)")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def fill_the_disk(monkeypatch, after: int = 0, name: str | None = None) -> None:
    """From now on the disk is full: flushing a file fails with ENOSPC, as a file system with delayed allocation
    reports it (every write of the app flushes before it renames). With `name`, only files so named count, and
    the first `after` of them still succeed."""
    real = paths._fsync_file
    flushed = []

    def no_space(path: Path) -> None:
        if name is None or path.name == name:
            flushed.append(path)
            if len(flushed) > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path)

    monkeypatch.setattr(paths, "_fsync_file", no_space)
