"""The one-active-model rule under concurrent promotions over HTTP: two uvicorn workers on Postgres, twelve
promotions of three versions released together. Every request succeeds, exactly one version is active at
the end, it is the one the latest promotion row names, and both workers converge on serving it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from binwatch.cli.models import register_model
from records.db import make_engine
from records.orm import ModelVersion, Promotion
from settings import Settings
from tests.api.support import clean_env, create_key, start_server

pytestmark = pytest.mark.slow

PROMOTIONS = 12


def test_concurrent_promotions_leave_exactly_one_active_model(
    tmp_path: Path, pg_url: str, checkpoints: tuple[Path, Path]
) -> None:
    home = tmp_path / "home"
    env = clean_env(
        BINWATCH_HOME=str(home),
        BINWATCH_DEVICE="cpu",
        BINWATCH_DATABASE_URL=pg_url,
        BINWATCH_WORKERS="2",
        BINWATCH_MODEL_POLL_SECONDS="0.5",
        BINWATCH_INSTALL_BUNDLED_MODEL="true",
    )
    server = start_server(env, tmp_path / "logs")
    try:
        server.wait_ready()
        settings = Settings(_env_file=None, home=home, database_url=pg_url)  # type: ignore[call-arg]
        versions = [1] + [register_model(settings, ckpt, promote=False).id for ckpt in checkpoints]
        assert len(set(versions)) == 3
        key = create_key(pg_url, "admin", name="race")
        barrier = threading.Barrier(PROMOTIONS)

        def promote(i: int) -> tuple[int, int]:
            target = versions[i % 3]
            # A fresh connection each: the kernel spreads them over both workers.
            with httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": key}) as client:
                barrier.wait(timeout=60)
                return target, client.post(f"/v1/models/{target}/promote").status_code

        with ThreadPoolExecutor(PROMOTIONS) as pool:
            results = list(pool.map(promote, range(PROMOTIONS)))
        assert [status for _, status in results] == [200] * PROMOTIONS, results

        engine = make_engine(pg_url)
        try:
            with engine.connect() as conn:
                active = (
                    conn.execute(sa.select(ModelVersion.id).where(ModelVersion.is_active)).scalars().all()
                )
                latest = conn.execute(
                    sa.select(Promotion.model_version_id).order_by(
                        Promotion.promoted_at.desc(), Promotion.id.desc()
                    )
                ).first()
        finally:
            engine.dispose()
        assert len(active) == 1, active
        assert latest is not None and latest[0] == active[0]

        # Both workers converge on it: 40 answers in a row on fresh connections (spread over both workers)
        # name it, well within a deadline of many poll intervals.
        deadline, in_a_row, last = time.monotonic() + 60, 0, None
        while in_a_row < 40 and time.monotonic() < deadline:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                last = client.get("/readyz").json()["model"]["id"]
            in_a_row = in_a_row + 1 if last == active[0] else 0
        assert in_a_row == 40, (last, active)
        assert "Traceback" not in server.log(), server.log()[-4000:]
    finally:
        server.stop()


def test_a_promotion_that_races_a_writer_without_the_lock_retries_and_wins(
    tmp_path: Path, pg_url: str, checkpoints: tuple[Path, Path]
) -> None:
    """Promotions take an advisory lock; a writer that does not (an operator's SQL, an older release) can
    still slip a second active row in. The API then hits the one-active index, tries again, and its promotion
    stands: 200, exactly one active version, the one asked for."""
    home = tmp_path / "home"
    env = clean_env(
        BINWATCH_HOME=str(home),
        BINWATCH_DEVICE="cpu",
        BINWATCH_DATABASE_URL=pg_url,
        BINWATCH_MODEL_POLL_SECONDS="0.5",
        BINWATCH_INSTALL_BUNDLED_MODEL="true",
    )
    server = start_server(env, tmp_path / "logs")
    engine = make_engine(pg_url)
    try:
        server.wait_ready()
        settings = Settings(_env_file=None, home=home, database_url=pg_url)  # type: ignore[call-arg]
        first, second = (register_model(settings, ckpt, promote=False).id for ckpt in checkpoints)
        key = create_key(pg_url, "admin", name="race")
        with engine.connect() as rogue:
            # The unlocked writer: switches the active row to `first`, holding its row locks uncommitted.
            rogue.execute(sa.update(ModelVersion).where(ModelVersion.is_active).values(is_active=False))
            rogue.execute(sa.update(ModelVersion).where(ModelVersion.id == first).values(is_active=True))
            with ThreadPoolExecutor(1) as pool:
                answer = pool.submit(
                    lambda: httpx.post(
                        f"{server.url}/v1/models/{second}/promote", headers={"X-API-Key": key}, timeout=60
                    )
                )
                # The API's promotion waits on the rogue's row locks; then the rogue commits under it.
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not _waiting_on_a_lock(engine):
                    time.sleep(0.05)
                assert _waiting_on_a_lock(engine), "the promotion never reached the locked rows"
                rogue.commit()
                response = answer.result(timeout=60)
        assert response.status_code == 200, response.text
        with engine.connect() as conn:
            active = conn.execute(sa.select(ModelVersion.id).where(ModelVersion.is_active)).scalars().all()
        assert active == [second]
        assert f"promotion of version {second} lost a race" in server.log(), server.log()[-3000:]
    finally:
        engine.dispose()
        server.stop()


def _waiting_on_a_lock(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        waits = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE model_versions%'"
            )
        ).scalar()
    return bool(waits)
