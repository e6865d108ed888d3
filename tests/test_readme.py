"""The README's two set-up commands are what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPEN_THE_APP = " && .venv/bin/jrft-desktop"


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    install_and_open, tests = blocks[0].strip(), blocks[1].strip()
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd "))]
    # CI has no display: it installs exactly as the README says, without opening the window, then runs the tests
    assert install_and_open.endswith(OPEN_THE_APP)
    assert ci_lines == [install_and_open.removesuffix(OPEN_THE_APP), tests]
    assert "pip install" in ci_lines[0] and "--self-test" in tests and "pytest" in tests
