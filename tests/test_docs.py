"""The README says what the code does: its configuration table is the Settings object's, and the commands
and pages it names exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_config_table_matches_settings() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from config_table import config_table
    finally:
        sys.path.pop(0)
    assert config_table() in README, "README's configuration table is stale: run scripts/config_table.py"


def test_linked_docs_exist() -> None:
    for link in re.findall(r"\]\((docs/[^)]+)\)", README):
        assert (REPO / link).is_file(), link


def test_the_two_commands_are_the_makefile_targets_and_ci_runs_the_test_one() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "make run" in README and "make test" in README
    assert re.search(r"^run: ", makefile, re.M) and re.search(r"^test: ", makefile, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_every_cli_command_in_the_readme_exists() -> None:
    binwatch = Path(sys.executable).with_name("binwatch")
    for group in ("data", "models", "apikeys", "jobs"):
        out = subprocess.run([str(binwatch), group, "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    for cmd in ("train", "evaluate", "predict", "serve", "worker"):
        out = subprocess.run([str(binwatch), cmd, "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (cmd, out.stderr)
