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
        path, _, anchor = link.partition("#")
        assert (REPO / path).is_file(), link
        if anchor:
            # GitHub's anchor of a heading: lower case, spaces to dashes, punctuation dropped.
            headings = re.findall(r"^#+ (.+)$", (REPO / path).read_text(), flags=re.M)
            anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
            assert anchor in anchors, f"{link}: no heading with that anchor"


def test_the_two_commands_are_the_makefile_targets_and_ci_runs_the_test_one() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "make run" in README and "make test" in README
    assert re.search(r"^run: ", makefile, re.M) and re.search(r"^test: ", makefile, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def readme_commands() -> list[list[str]]:
    """Every command the README's command-line table names, as argument lists for ``binwatch``."""
    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    commands: list[list[str]] = []
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        first_cell = row.split(" | ")[0]
        for snippet in re.findall(r"`([^`]+)`", first_cell):
            words = snippet.removeprefix("binwatch ").split()
            path: list[str] = []
            for word in words:  # command words until the first argument (DATA, [--x], --x, ID...)
                if not re.fullmatch(r"[a-z][a-z0-9|-]*", word):
                    break
                path.append(word)
            # "jobs submit|list|show" names three commands.
            *group, last = path
            commands.extend([*group, alt] for alt in last.split("|"))
    return commands


def test_every_cli_command_in_the_readme_exists() -> None:
    commands = readme_commands()
    assert len(commands) >= 20, commands  # the table was read, not skipped
    assert ["tune"] in commands and ["jobs", "watch"] in commands and ["models", "promote"] in commands
    binwatch = Path(sys.executable).with_name("binwatch")
    for command in commands:
        out = subprocess.run([str(binwatch), *command, "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (command, out.stderr)
        assert "Usage:" in out.stdout, (command, out.stdout)
