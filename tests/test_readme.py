"""The README's two set-up commands are what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPEN_THE_APP = " && .venv/bin/jrft-desktop"


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    install_and_open, tests = blocks[0].strip(), blocks[1].strip()
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd "))]
    # CI has no display: it installs exactly as the README says, without opening the window, then runs the tests
    assert install_and_open.endswith(OPEN_THE_APP)
    assert ci_lines == [install_and_open.removesuffix(OPEN_THE_APP), tests]
    assert "pip install" in ci_lines[0] and "--self-test" in tests and "pytest" in tests


def test_the_readme_is_a_front_door_whose_links_resolve():
    """The README stays short (the manual is the docs site), and every file it links or shows exists."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [target.partition("#")[0] for target in targets if "://" not in target]
    assert "docs/index.md" in local and any(target.endswith(".png") for target in local)
    assert [target for target in local if not (ROOT / target).exists()] == []
