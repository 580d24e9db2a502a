"""Alembic environment, shared by the `alembic` command line and records.migrate.

The URL comes from the config's ``sqlalchemy.url`` when code set it (records.migrate does), otherwise from
binwatch's settings (BINWATCH_DATABASE_URL, else the embedded SQLite file), so the shell and the service
always agree on which database they mean.

This folder must never become a Python package (no ``__init__.py``): run from the repository root, it
would then shadow the ``alembic`` library itself.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig
from pathlib import Path

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from records.db import make_engine, normalize_url
from records.orm import Base

# Any constant works; it only has to be the same in every process that migrates this database.
POSTGRES_MIGRATION_LOCK = 0x62696E77  # "binw"

config = context.config
target_metadata = Base.metadata

# Only the command line has an ini file; code calling records.migrate keeps its own logging setup.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from settings import get_settings

    return get_settings().resolved_database_url


def configure(connection: Connection | None = None, url: str | None = None) -> None:
    if connection is not None:
        dialect = connection.dialect.name
    else:
        dialect = normalize_url(url or "").get_backend_name()
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead, so one migration script
        # serves both dialects.
        render_as_batch=dialect == "sqlite",
        compare_type=True,
        literal_binds=connection is None,
        dialect_opts={"paramstyle": "named"} if connection is None else {},
    )


def run_migrations_offline() -> None:
    """``alembic upgrade head --sql``: print the SQL instead of running it."""
    configure(url=normalize_url(database_url()).render_as_string(hide_password=False))
    with context.begin_transaction():
        context.run_migrations()


def _check_sqlite_foreign_keys(connection: Connection) -> None:
    problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise RuntimeError(f"migration left rows violating foreign keys: {problems[:10]}")


@contextmanager
def sqlite_file_lock(url: str) -> Iterator[None]:
    """Serialise concurrent migrations of one SQLite file (the API and the worker both migrate at startup).

    Taken before the first connection: connecting already switches the file to WAL, which needs an exclusive
    lock and fails at once with "database is locked" when several processes connect to a new file together.
    SQLite runs DDL outside transactions, so its own locking could not cover a whole migration anyway. A lock
    file beside the database, not the database itself, because SQLite's own fcntl locks on that file would
    interact with ours on some filesystems. The second process waits, then finds the schema at head.
    """
    parsed = normalize_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        yield
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    with Path(f"{database}.migrate-lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def postgres_lock(connection: Connection) -> Iterator[None]:
    """The same for Postgres: a transaction-scoped advisory lock, released by the commit that also makes the
    new schema visible, so a second migrator waits and then finds the schema at head."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({POSTGRES_MIGRATION_LOCK})")
    yield


def run_migrations_online() -> None:
    url = database_url()
    engine = make_engine(url, poolclass=sa.pool.NullPool)
    try:
        with sqlite_file_lock(url), engine.connect() as connection:
            is_sqlite = connection.dialect.name == "sqlite"
            if is_sqlite:
                # Batch mode drops and recreates tables; with enforcement on, dropping a parent table
                # would cascade-delete its children's rows. SQLite only honours this pragma outside a
                # transaction, hence the commit; integrity is checked once the migration is done.
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()
            configure(connection=connection)
            with context.begin_transaction(), postgres_lock(connection):
                context.run_migrations()
            if is_sqlite:
                _check_sqlite_foreign_keys(connection)
                connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
