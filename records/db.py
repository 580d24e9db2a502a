"""Engines and sessions for Postgres (production) and a SQLite file (the embedded default).

Both the API and the worker build their engine here so the two dialects behave the same way
wherever they are used: foreign keys enforced, UTC timestamps, stale connections detected.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

# Without a limit, psycopg waits on an unreachable host for as long as the OS does, and /readyz hangs.
POSTGRES_CONNECT_TIMEOUT_S = 10
# The API and the worker write to the same SQLite file from separate processes; waiting for the other
# writer's lock beats failing at once with "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30.0


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or refuses queries; the message names the URL (no password)."""


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``; a bare ``postgresql://`` or ``postgres://`` gets the psycopg 3 driver we ship."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL as text with any password masked, for messages and logs."""
    return normalize_url(url).render_as_string(hide_password=True)


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # SQLite ignores REFERENCES clauses unless every connection asks for enforcement.
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL lets the API read while the worker writes epoch metrics; the default journal blocks readers.
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def make_engine(url: str, **engine_kwargs: Any) -> Engine:
    """An Engine for ``url``: ``sqlite:///path/file.db`` or ``postgresql+psycopg://user@host/db``.

    For a SQLite file the parent folder is created, so the embedded default works on a fresh checkout.
    Extra keyword arguments go to ``sqlalchemy.create_engine`` (e.g. ``poolclass``, ``echo``).
    """
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        connect_args = {
            # Sessions are handed between threads (FastAPI's threadpool, the batcher); the pool serialises
            # use of each connection, so sqlite3's same-thread guard only gets in the way.
            "check_same_thread": False,
            "timeout": SQLITE_BUSY_TIMEOUT_S,
            **engine_kwargs.pop("connect_args", {}),
        }
        engine = sa.create_engine(parsed, connect_args=connect_args, **engine_kwargs)
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    if backend == "postgresql":
        connect_args = dict(engine_kwargs.pop("connect_args", {}))
        if "connect_timeout" not in parsed.query:
            connect_args.setdefault("connect_timeout", POSTGRES_CONNECT_TIMEOUT_S)
        # Postgres restarts and idle-connection reapers leave dead sockets in the pool; ping before use.
        engine_kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(parsed, connect_args=connect_args, **engine_kwargs)
    raise ValueError(
        f"unsupported database URL {safe_url(parsed)}: use sqlite:///path/to/file.db or "
        "postgresql+psycopg://user@host:5432/db"
    )


def make_session_factory(engine: Engine, *, expire_on_commit: bool = False) -> sessionmaker[Session]:
    """A session factory bound to ``engine``.

    ``expire_on_commit`` defaults to False because callers commit and then serialise the rows they just
    wrote (API responses, task results); expiring them would cost a query per attribute, or fail once
    the session is closed.
    """
    return sessionmaker(bind=engine, expire_on_commit=expire_on_commit)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commits when the block finishes, rolls back if it raises, always closes."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def check_database(engine: Engine) -> None:
    """Raise ``DatabaseUnavailable`` unless the database answers a trivial query (for /readyz)."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise DatabaseUnavailable(f"database {safe_url(engine.url)} is unreachable: {reason}") from exc
