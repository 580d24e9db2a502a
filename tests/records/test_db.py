"""Engines for both dialects: SQLite gets its pragmas, Postgres its driver, /readyz a clear error."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from records.db import DatabaseUnavailable, check_database, make_engine, make_session_factory, session_scope
from records.orm import Base, Bin, ModelVersion, TrainingJob
from tests.conftest import free_port


def test_sqlite_engine_creates_its_folder_and_enforces_foreign_keys_with_wal(tmp_path: Path) -> None:
    database = tmp_path / "does" / "not" / "exist" / "binwatch.db"
    engine = make_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert database.is_file()
    finally:
        engine.dispose()


def test_sqlite_connections_may_move_between_threads(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'binwatch.db'}")
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    errors: list[BaseException] = []
    session = factory()
    session.add(Bin(id="b1", expected_count=1, source="api"))
    session.flush()

    def finish() -> None:
        try:
            session.commit()
            session.close()
        except BaseException as exc:  # noqa: BLE001 - surfaced in the main thread below
            errors.append(exc)

    worker = threading.Thread(target=finish)
    worker.start()
    worker.join()
    try:
        assert errors == []
        with session_scope(factory) as fresh:
            assert fresh.get_one(Bin, "b1").expected_count == 1
    finally:
        engine.dispose()


def test_create_all_handles_the_job_version_cycle_on_sqlite(tmp_path: Path) -> None:
    # Tests elsewhere may build schemas with create_all rather than migrations; the cycle between
    # training_jobs and model_versions must not break that.
    engine = make_engine(f"sqlite:///{tmp_path / 'binwatch.db'}")
    try:
        Base.metadata.create_all(engine)
        factory = make_session_factory(engine)
        with session_scope(factory) as session:
            job = TrainingJob(dataset={}, params={}, promotion_policy="never", epochs=1)
            version = ModelVersion(
                name="v",
                artifact_key="models/v.pt",
                sha256="0" * 64,
                architecture="resnet18",
                classes=["0", "1"],
                preprocessing={},
                source="job",
                training_job=job,
            )
            job.model_version = version
            session.add_all([job, version])
        with session_scope(factory) as session:
            stored = session.get_one(TrainingJob, job.id)
            assert stored.model_version is not None and stored.model_version.training_job_id == job.id
    finally:
        engine.dispose()


def test_postgres_urls_get_the_psycopg3_driver(pg_url: str) -> None:
    bare = pg_url.replace("postgresql+psycopg://", "postgresql://")
    engine = make_engine(bare)
    try:
        assert engine.dialect.driver == "psycopg"
        assert engine.pool._pre_ping  # type: ignore[attr-defined]
        check_database(engine)
    finally:
        engine.dispose()


def test_check_database_passes_on_reachable_databases(pg_url: str, tmp_path: Path) -> None:
    for url in (pg_url, f"sqlite:///{tmp_path / 'binwatch.db'}"):
        engine = make_engine(url)
        try:
            check_database(engine)
        finally:
            engine.dispose()


def test_check_database_names_the_unreachable_database_without_its_password() -> None:
    port = free_port()  # nothing listens here
    engine = make_engine(f"postgresql+psycopg://binwatch:s3cret@127.0.0.1:{port}/binwatch")
    try:
        with pytest.raises(DatabaseUnavailable, match=f"127.0.0.1:{port}/binwatch is unreachable") as info:
            check_database(engine)
        assert "s3cret" not in str(info.value)
        assert isinstance(info.value.__cause__, sa.exc.OperationalError)
    finally:
        engine.dispose()


def test_unsupported_urls_are_refused_with_the_supported_forms() -> None:
    with pytest.raises(ValueError, match="sqlite:///.*postgresql\\+psycopg://"):
        make_engine("mysql://root:pw@localhost/db")
