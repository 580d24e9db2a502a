"""records/job_leases.py promises that any number of workers can race for a job through one conditional
UPDATE: exactly one wins, the others are told BUSY, and the attempt is counted once. Here the racers are
separate processes with their own Postgres connections, released together by a barrier."""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from records import jobs
from records.db import make_engine, make_session_factory
from records.migrate import upgrade_database
from records.orm import TrainingJob, utcnow

pytestmark = pytest.mark.slow

RACERS = 6
JOBS = 12
STALE = 30.0


def race(url: str, job_ids: list[str], barrier: mp.synchronize.Barrier, name: str, out: mp.Queue) -> None:
    engine = make_engine(url)
    factory = make_session_factory(engine)
    outcomes = {}
    try:
        for job_id in job_ids:
            with factory() as session:
                session.execute(sa.text("SELECT 1"))  # connected before the start signal
                barrier.wait(timeout=60)
                outcomes[job_id] = jobs.claim_job(session, job_id, name, STALE, max_attempts=3).outcome.value
    finally:
        engine.dispose()
    out.put((name, outcomes))


def run_racers(url: str, job_ids: list[str]) -> dict[str, dict[str, str]]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(RACERS), ctx.Queue()
    procs = [ctx.Process(target=race, args=(url, job_ids, barrier, f"host-{i}", out)) for i in range(RACERS)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


def test_racing_workers_claim_each_job_exactly_once(pg_url: str) -> None:
    upgrade_database(pg_url)
    engine = make_engine(pg_url)
    factory = make_session_factory(engine)
    with factory() as session:
        job_ids = []
        for _ in range(JOBS):
            job = jobs.create_job(
                session, dataset={"uri": "/data"}, params={"config": {}}, promotion_policy="never", epochs=1
            )
            session.commit()
            job_ids.append(job.id)

    results = run_racers(pg_url, job_ids)
    with factory() as session:
        for job_id in job_ids:
            outcomes = Counter(results[name][job_id] for name in results)
            assert outcomes == {"claimed": 1, "busy": RACERS - 1}, (job_id, outcomes)
            winner = next(name for name in results if results[name][job_id] == "claimed")
            job = session.get(TrainingJob, job_id)
            assert job is not None and job.status == "running" and job.host == winner and job.attempts == 1

        # Every owner falls silent: the takeover race has one winner too, and counts one more attempt.
        session.execute(sa.update(TrainingJob).values(heartbeat_at=utcnow() - timedelta(seconds=STALE + 5)))
        session.commit()
    results = run_racers(pg_url, job_ids)
    with factory() as session:
        for job_id in job_ids:
            outcomes = Counter(results[name][job_id] for name in results)
            assert outcomes == {"claimed": 1, "busy": RACERS - 1}, (job_id, outcomes)
            job = session.get(TrainingJob, job_id)
            assert job is not None and job.attempts == 2
    engine.dispose()
