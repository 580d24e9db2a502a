"""Help text that reads well in a terminal."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import typer

Command = Callable[..., None]


def help_from_docstring(fn: Command) -> str:
    """The docstring with its prose paragraphs joined into single lines.

    Typer's rich help keeps every line break of the docstring, so prose wrapped for the source would be
    wrapped a second time by the terminal; indented blocks (the examples) keep their lines.
    """
    paragraphs = inspect.cleandoc(fn.__doc__ or "").split("\n\n")
    return "\n\n".join(
        p if p.startswith(" ") else " ".join(line.strip() for line in p.splitlines()) for p in paragraphs
    )


def command(app: typer.Typer, name: str | None = None) -> Callable[[Command], Command]:
    """``app.command`` using :func:`help_from_docstring`."""

    def register(fn: Command) -> Command:
        return app.command(name, help=help_from_docstring(fn))(fn)

    return register
