"""Database URLs for the records tests: each test that asks for ``db_url`` runs once per dialect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from records.db import make_engine, make_session_factory
from records.migrate import upgrade_database


def sqlite_url(folder: Path) -> str:
    # A nested, not-yet-existing folder: make_engine must create it, as on a fresh checkout.
    return f"sqlite:///{folder / 'state' / 'binwatch.db'}"


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a new Postgres database (pg_url) or a new SQLite file."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return sqlite_url(tmp_path)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a migrated ``db_url`` (both dialects)."""
    upgrade_database(db_url)
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()
