"""A fresh Python process that never imports jrft_desktop: how the tests load exported models as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


def run_clean(script: str, job: dict, cwd: Path, timeout: int = 900) -> dict:
    """Run `script` with `job` as JSON on its standard input, one torch thread and no PYTHONPATH; its last line of
    output, parsed, after checking that it never imported jrft_desktop (the script reports
    `"jrft_desktop_imported": "jrft_desktop" in sys.modules`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(job), capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.pop("jrft_desktop_imported") is False, "the clean process imported jrft_desktop"
    return out


def clean_script(imports: str, body: str) -> str:
    """A script for `run_clean`: `imports` (json, sys and torch come with it), then `body`, which reads the `job`
    and fills `out`, on one torch thread; it prints `out` with the check that `run_clean` makes."""
    return "\n".join(["import json, sys", "import torch", textwrap.dedent(imports).strip(),
                      "job = json.load(sys.stdin)", "torch.set_num_threads(1)", "out = {}",
                      textwrap.dedent(body).strip("\n"),
                      'out["jrft_desktop_imported"] = "jrft_desktop" in sys.modules', "print(json.dumps(out))"]) + "\n"
