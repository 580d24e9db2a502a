"""Print the README's configuration table from the Settings object, so the docs cannot drift from the code.

Run: .venv/bin/python scripts/config_table.py   (tests/test_docs.py checks the README holds its output)
"""

from __future__ import annotations

from settings import Settings


def config_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        shown = "—" if default is None else f"`{default}`"
        text = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `BINWATCH_{name.upper()}` | {shown} | {text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(config_table())
