"""The Alembic migrations create exactly the schema records.orm describes, on both dialects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from records.db import make_engine
from records.migrate import (
    alembic_config,
    current_revision,
    downgrade_database,
    head_revision,
    upgrade_database,
)
from records.orm import Base

REPO = Path(__file__).resolve().parents[2]
EXPECTED_TABLES = set(Base.metadata.tables)


def schema_diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def check_constraints(url: str) -> set[tuple[str, str]]:
    # compare_metadata does not look at CHECK constraints, so compare their names separately.
    engine = make_engine(url)
    try:
        inspector = sa.inspect(engine)
        return {
            (table, ck["name"]) for table in EXPECTED_TABLES for ck in inspector.get_check_constraints(table)
        }
    finally:
        engine.dispose()


def metadata_check_constraints() -> set[tuple[str, str]]:
    return {
        (table.name, str(constraint.name))
        for table in Base.metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, sa.CheckConstraint)
    }


def test_upgrade_to_head_creates_every_table(db_url: str) -> None:
    assert current_revision(db_url) is None

    upgrade_database(db_url)

    assert current_revision(db_url) == head_revision() == "0007"
    assert table_names(db_url) == EXPECTED_TABLES | {"alembic_version"}


def test_migrations_match_the_orm_without_drift(db_url: str) -> None:
    upgrade_database(db_url)

    assert schema_diff(db_url) == []
    assert check_constraints(db_url) == metadata_check_constraints()


def test_upgrade_is_idempotent(db_url: str) -> None:
    upgrade_database(db_url)
    upgrade_database(db_url)

    assert current_revision(db_url) == head_revision()


@pytest.mark.slow
def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    upgrade_database(db_url)

    downgrade_database(db_url, "base")
    assert current_revision(db_url) is None
    assert table_names(db_url) <= {"alembic_version"}

    upgrade_database(db_url)
    assert current_revision(db_url) == head_revision()
    assert schema_diff(db_url) == []
    assert check_constraints(db_url) == metadata_check_constraints()


@pytest.mark.slow
def test_alembic_command_line_uses_binwatch_settings(tmp_path: Path) -> None:
    # No URL on the command line or in alembic.ini: env.py falls back to the settings' embedded
    # SQLite file under BINWATCH_HOME, as `binwatch serve` would use.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINWATCH_")}
    env["BINWATCH_HOME"] = str(tmp_path / "home")
    alembic = Path(sys.executable).with_name("alembic")
    result = subprocess.run(
        [str(alembic), "upgrade", "head"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr

    database = tmp_path / "home" / "binwatch.db"
    assert database.is_file()
    url = f"sqlite:///{database}"
    assert current_revision(url) == head_revision()
    assert schema_diff(url) == []


@pytest.mark.slow
def test_alembic_command_line_prefers_binwatch_database_url(tmp_path: Path, pg_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINWATCH_")}
    env["BINWATCH_HOME"] = str(tmp_path / "unused-home")
    env["BINWATCH_DATABASE_URL"] = pg_url
    alembic = Path(sys.executable).with_name("alembic")
    result = subprocess.run(
        [str(alembic), "upgrade", "head"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr

    assert current_revision(pg_url) == head_revision()
    assert not (tmp_path / "unused-home").exists()


@pytest.mark.slow
def test_concurrent_upgrades_wait_for_each_other(db_url: str) -> None:
    # The API and the worker may both migrate when they start; separate processes, because Alembic's
    # `context` and `op` are process-wide proxies.
    script = "import sys; from records.migrate import upgrade_database; upgrade_database(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", script, db_url], cwd=REPO, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    failures = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        if proc.returncode != 0:
            failures.append(stderr)
    assert failures == []
    assert current_revision(db_url) == head_revision()
    assert schema_diff(db_url) == []


def test_config_keeps_percent_escapes_in_urls() -> None:
    url = "postgresql+psycopg://binwatch:p%40ss%25word@db.internal:5432/binwatch"
    assert alembic_config(url).get_main_option("sqlalchemy.url") == url
    # A bare postgresql:// URL gets the psycopg 3 driver, as make_engine would use.
    assert (
        alembic_config("postgresql://u@h/db").get_main_option("sqlalchemy.url")
        == "postgresql+psycopg://u@h/db"
    )
