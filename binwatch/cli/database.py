"""What the commands that work on the database directly share: settings, a migrated database, errors.

These commands (apikeys, models, serve) need no running server and no API key: they read the settings'
BINWATCH_DATABASE_URL / BINWATCH_ARTIFACT_STORE (or the embedded default under BINWATCH_HOME) and migrate
the database first, like the server does.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
import typer
from rich.console import Console

from records.db import make_engine, make_session_factory, safe_url
from settings import Settings

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # error messages stay greppable, unwrapped


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        raise fail(f"invalid BINWATCH_* settings: {exc}") from exc


@dataclass
class Database:
    settings: Settings

    def __enter__(self) -> sa.orm.sessionmaker[sa.orm.Session]:
        from records.migrate import upgrade_database

        url = self.settings.resolved_database_url
        try:
            if self.settings.auto_migrate:
                upgrade_database(url)
            self.engine = make_engine(url)
        except sa.exc.OperationalError as exc:
            raise fail(f"database {safe_url(url)} is unreachable: {exc.orig or exc}") from exc
        return make_session_factory(self.engine)

    def __exit__(self, *exc: object) -> None:
        self.engine.dispose()
