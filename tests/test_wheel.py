"""`python -m build` makes a wheel and an sdist; the wheel, installed into a new virtual environment, gives working
`jrft` and `jrft-desktop` commands with the resources inside the package.

Offline and quick: the wheel is built without build isolation, and the new environment reaches the project's
already-installed dependencies through a .pth file instead of installing torch again; the package itself comes
from the wheel only (checked)."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import jrft_desktop
from jrft_desktop.core.paths import resources_dir, sample_data_dir

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jrft_desktop"
RESOURCES = ROOT / "resources"  # the package data jrft_desktop.resources (pyproject.toml's package-dir)
DEMO_STEPS = 1  # one step and one evaluation on the 872 dev sentences: the whole demo path, in about a minute


def _files(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts}


def _package_files(resources_at: str = "jrft_desktop/resources") -> set[str]:
    """The modules, and the resources at `resources_at`: inside the package in the wheel, in the top-level folder in
    the source tree and the sdist."""
    modules = {f"jrft_desktop/{name}" for name in _files(PACKAGE)}
    return modules | {f"{resources_at}/{name}" for name in _files(RESOURCES)}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    version = jrft_desktop.__version__
    return {"wheel": out / f"jrft_desktop-{version}-py3-none-any.whl", "sdist": out / f"jrft_desktop-{version}.tar.gz"}


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A new virtual environment with the wheel installed (no dependencies: those come from the project's)."""
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # appended after the new environment's own site-packages, and its .pth files (our editable install) stay unread
    (site / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                           str(dist["wheel"])], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return root


def run_in(venv: Path, command: list[str], cwd: Path, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    environment.update(env, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_and_the_sdist_hold_the_package_and_its_resources(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        in_wheel = set(wheel.namelist())
        entry_points = wheel.read(f"jrft_desktop-{jrft_desktop.__version__}.dist-info/entry_points.txt").decode()
    assert _package_files() <= in_wheel  # every module, icon, theme, sample file and the .desktop file
    assert {"jrft_desktop/resources/jrft-desktop.desktop", "jrft_desktop/resources/themes/light.qss",
            "jrft_desktop/resources/sample/sst2_train.tsv",
            "jrft_desktop/resources/icons/hicolor/256x256/apps/jrft-desktop.png"} <= in_wheel
    assert not [name for name in in_wheel if name.startswith("tests/")]
    scripts = configparser.ConfigParser()
    scripts.read_string(entry_points)
    assert dict(scripts["console_scripts"]) == {"jrft": "jrft_desktop.cli:main"}
    assert dict(scripts["gui_scripts"]) == {"jrft-desktop": "jrft_desktop.gui.app:main"}

    with tarfile.open(dist["sdist"]) as sdist:
        top = f"jrft_desktop-{jrft_desktop.__version__}/"
        in_sdist = {name.removeprefix(top) for name in sdist.getnames()}
    assert _package_files(resources_at="resources") <= in_sdist
    assert {"pyproject.toml", "README.md", "constraints.txt", "tests/conftest.py", "tests/test_wheel.py",
            "packaging/render_icons.py"} <= in_sdist


def test_the_source_tree_reads_the_top_level_resources():
    assert not (PACKAGE / "resources").exists()  # moved to the top level; a leftover would be read instead
    assert resources_dir() == RESOURCES and (sample_data_dir() / "sst2_train.tsv").is_file()


@pytest.mark.slow
def test_the_installed_wheel_runs_the_commands_and_the_demo(venv, tmp_path):
    where = run_in(venv, [venv / "bin" / "python", "-c",
                          "import jrft_desktop; from jrft_desktop.core.paths import resources_dir; "
                          "print(jrft_desktop.__file__); print(resources_dir())"], tmp_path)
    assert where.returncode == 0, where.stderr
    module, resources = map(Path, where.stdout.split("\n")[:2])
    assert module.is_relative_to(venv) and resources.is_relative_to(venv)  # the wheel's copy, not the source tree
    assert (resources / "jrft-desktop.desktop").is_file() and (resources / "sample" / "sst2_dev.tsv").is_file()

    for command, expected in (("jrft", "demo"), ("jrft-desktop", "--self-test")):
        helped = run_in(venv, [venv / "bin" / command, "--help"], tmp_path)
        assert helped.returncode == 0 and expected in helped.stdout, helped.stderr

    menu = tmp_path / "xdg-data"
    installed = run_in(venv, [venv / "bin" / "jrft-desktop", "--install-desktop-entry"], tmp_path,
                       XDG_DATA_HOME=str(menu))
    assert installed.returncode == 0, installed.stderr
    entry = (menu / "applications" / "jrft-desktop.desktop").read_text(encoding="utf-8")
    assert f"\nExec={venv / 'bin' / 'jrft-desktop'}\n" in entry  # the menu starts this installation

    demo = run_in(venv, [venv / "bin" / "jrft", "demo", "--steps", str(DEMO_STEPS), "--output", tmp_path / "demo"],
                  tmp_path, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    accuracy = re.search(r"accuracy on the GLUE SST-2 dev set \(872 sentences\): ([0-9.]+)", demo.stdout)
    assert accuracy and 0.0 < float(accuracy.group(1)) <= 1.0, demo.stdout
    assert f"step {DEMO_STEPS}/{DEMO_STEPS}" in demo.stderr
    assert "P(positive) = " in demo.stdout
    assert (tmp_path / "demo" / "vector.safetensors").stat().st_size > 0
    assert (tmp_path / "demo" / "vector.json").is_file()
