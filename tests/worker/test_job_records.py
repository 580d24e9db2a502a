"""The job state machine (records/jobs.py) on Postgres and on the embedded SQLite default."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from records import jobs
from records.db import make_engine, make_session_factory
from records.migrate import upgrade_database
from records.orm import EpochMetric, TrainingJob, utcnow

STALE = 3.0


@pytest.fixture(params=["postgresql", "sqlite"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    if request.param == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
    else:
        url = f"sqlite:///{tmp_path / 'binwatch.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        yield s
    engine.dispose()


def new_job(session: Session, **kw: object) -> str:
    job = jobs.create_job(
        session, dataset={"uri": "/data"}, params={"config": {}}, promotion_policy="never", epochs=3, **kw
    )
    session.commit()
    return job.id


def age_heartbeat(session: Session, job_id: str, seconds: float) -> None:
    session.execute(
        sa.update(TrainingJob)
        .where(TrainingJob.id == job_id)
        .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
    )
    session.commit()


def test_one_live_owner_and_takeover_after_silence(session: Session) -> None:
    job_id = new_job(session)
    first = jobs.claim_job(session, job_id, "host-a", STALE)
    assert first.outcome == jobs.ClaimOutcome.CLAIMED and first.job is not None
    assert first.job.status == "running" and first.job.host == "host-a" and first.job.started_at is not None
    started = first.job.started_at

    # A second delivery while host-a is alive goes back to the queue.
    assert jobs.claim_job(session, job_id, "host-b", STALE).outcome == jobs.ClaimOutcome.BUSY
    assert jobs.heartbeat(session, job_id, "host-a")

    # host-a falls silent: host-b takes over; started_at keeps the first start (for timings).
    age_heartbeat(session, job_id, STALE + 1)
    second = jobs.claim_job(session, job_id, "host-b", STALE)
    assert second.outcome == jobs.ClaimOutcome.CLAIMED and second.job is not None
    assert second.job.host == "host-b" and second.job.started_at == started

    # host-a comes back (a paused VM): every write it tries is refused, so it stops.
    assert not jobs.heartbeat(session, job_id, "host-a")
    stored = jobs.record_epoch(
        session,
        job_id,
        "host-a",
        epoch=1,
        train_loss=1.0,
        val_loss=1.0,
        val_accuracy=0.5,
        val_rmse=1.0,
        duration_s=1.0,
        metrics={},
    )
    assert not stored and jobs.epoch_metrics(session, job_id) == []
    assert not jobs.finish_job(session, job_id, "host-a", "succeeded")
    assert jobs.finish_job(session, job_id, "host-b", "succeeded")
    assert jobs.claim_job(session, job_id, "host-c", STALE).outcome == jobs.ClaimOutcome.FINISHED


def test_epoch_rows_are_upserted_and_advance_the_job(session: Session) -> None:
    job_id = new_job(session)
    jobs.claim_job(session, job_id, "w", STALE)
    for loss in (2.0, 1.5):  # the same epoch trained twice (a redelivered task) leaves one row
        assert jobs.record_epoch(
            session,
            job_id,
            "w",
            epoch=1,
            train_loss=loss,
            val_loss=None,
            val_accuracy=None,
            val_rmse=None,
            duration_s=3.0,
            metrics={"run": str(loss)},
        )
    rows = jobs.epoch_metrics(session, job_id)
    assert [(r.epoch, r.train_loss, r.metrics["run"]) for r in rows] == [(1, 1.5, "1.5")]
    assert session.scalar(sa.select(sa.func.count()).select_from(EpochMetric)) == 1
    assert jobs.get_job(session, job_id).epoch == 1  # type: ignore[union-attr]


def test_cancel_outcomes(session: Session) -> None:
    queued = new_job(session)
    outcome, job = jobs.request_cancel(session, queued, STALE)
    session.commit()
    assert outcome == jobs.CancelOutcome.CANCELLED and job is not None and job.status == "cancelled"
    assert job.finished_at is not None
    # Its message still reaches a worker later: nothing runs.
    assert jobs.claim_job(session, queued, "w", STALE).outcome == jobs.ClaimOutcome.FINISHED

    running = new_job(session)
    jobs.claim_job(session, running, "w", STALE)
    outcome, job = jobs.request_cancel(session, running, STALE)
    session.commit()
    assert outcome == jobs.CancelOutcome.REQUESTED and job is not None
    assert job.status == "running" and job.cancel_requested
    assert jobs.cancel_requested(session, running)

    # A running job whose worker went silent has nobody to act on the flag: cancelled at once.
    orphan = new_job(session)
    jobs.claim_job(session, orphan, "w", STALE)
    age_heartbeat(session, orphan, STALE + 1)
    outcome, job = jobs.request_cancel(session, orphan, STALE)
    session.commit()
    assert outcome == jobs.CancelOutcome.CANCELLED and job is not None and job.status == "cancelled"

    assert jobs.request_cancel(session, orphan, STALE)[0] == jobs.CancelOutcome.FINISHED
    assert jobs.request_cancel(session, "f" * 32, STALE)[0] == jobs.CancelOutcome.NOT_FOUND


def test_cancel_requested_while_its_worker_died_is_honoured_on_redelivery(session: Session) -> None:
    job_id = new_job(session)
    jobs.claim_job(session, job_id, "w", STALE)
    jobs.request_cancel(session, job_id, STALE)
    session.commit()
    age_heartbeat(session, job_id, STALE + 1)
    claim = jobs.claim_job(session, job_id, "w2", STALE)
    assert claim.outcome == jobs.ClaimOutcome.CANCELLED and claim.job is not None
    assert claim.job.status == "cancelled"


def test_not_queued_release_and_abandoned(session: Session) -> None:
    lost = new_job(session)
    assert jobs.mark_not_queued(session, lost, "not queued: broker down")
    session.commit()
    job = jobs.get_job(session, lost)
    assert job is not None and job.status == "failed" and job.error == "not queued: broker down"

    released = new_job(session)
    jobs.claim_job(session, released, "w", STALE)
    assert not jobs.mark_not_queued(session, released, "x")  # only a queued job can be "not queued"
    assert jobs.release_job(session, released, "w")
    assert jobs.get_job(session, released).status == "queued"  # type: ignore[union-attr]
    assert jobs.claim_job(session, released, "w2", STALE).outcome == jobs.ClaimOutcome.CLAIMED

    assert jobs.fail_running(session, released, "hard time limit exceeded")
    session.commit()
    assert jobs.get_job(session, released).status == "failed"  # type: ignore[union-attr]
    assert not jobs.fail_running(session, released, "again")


def test_listing_is_newest_first_with_cursor_and_status_filter(session: Session) -> None:
    ids = [new_job(session) for _ in range(5)]
    jobs.claim_job(session, ids[1], "w", STALE)
    jobs.record_epoch(
        session,
        ids[1],
        "w",
        epoch=1,
        train_loss=1.0,
        val_loss=1.0,
        val_accuracy=0.25,
        val_rmse=2.0,
        duration_s=1.0,
        metrics={},
    )
    jobs.record_epoch(
        session,
        ids[1],
        "w",
        epoch=2,
        train_loss=0.5,
        val_loss=1.0,
        val_accuracy=0.5,
        val_rmse=1.0,
        duration_s=1.0,
        metrics={},
    )
    first = jobs.list_jobs(session, limit=2)
    second = jobs.list_jobs(session, limit=2, before=first.next_cursor)
    third = jobs.list_jobs(session, limit=2, before=second.next_cursor)
    listed = [j.id for j in first.items + second.items + third.items]
    assert listed == list(reversed(ids)) and third.next_cursor is None
    assert [j.id for j in jobs.list_jobs(session, status=["running"]).items] == [ids[1]]
    latest = jobs.latest_epochs(session, ids)
    assert set(latest) == {ids[1]} and latest[ids[1]].epoch == 2
    with pytest.raises(LookupError):
        jobs.list_jobs(session, before="0" * 32)
