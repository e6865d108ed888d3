"""The documentation site builds with `mkdocs build --strict` (no broken link or anchor), and its CLI reference is
generated from the `jrft` parser, so it lists every command and flag of the installed version."""

import argparse
import html
import os
import subprocess
import sys
from pathlib import Path

from jrft_desktop.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    actions = [action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)]
    return list(actions[0].choices)


def test_the_site_builds_strictly_with_the_generated_cli_reference(tmp_path):
    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                            str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                           check=False, cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stdout + built.stderr

    cli_page = html.unescape((site / "cli" / "index.html").read_text(encoding="utf-8"))
    assert "usage: jrft [-h]" in cli_page
    commands = _commands()
    assert {"train", "eval", "predict", "export", "apply", "methods", "bench", "demo"} <= set(commands)
    for command in commands:  # a section with its --help for every command, new ones included
        assert f'id="jrft-{command}"' in cli_page and f"usage: jrft {command}" in cli_page, command
    for flag in ("--max-steps", "--epsilon", "--position", "--onnx", "--gguf", "--quick"):
        assert flag in cli_page, flag
    for page in ("index.html", "install/index.html", "guide/compare/index.html", "architecture/index.html",
                 "benchmarks/index.html", "bad-input/index.html"):
        assert (site / page).is_file(), page
