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


# ------------------------------------------------------------------------- attempts limit and the reaper


def attempts_of(session: Session, job_id: str) -> tuple[int, list[str]]:
    job = session.get(TrainingJob, job_id, populate_existing=True)
    assert job is not None
    return job.attempts, list(job.params.get("attempt_hosts") or [])


def test_each_claim_is_an_attempt_and_the_one_past_the_limit_gives_up(session: Session) -> None:
    job_id = new_job(session)
    assert attempts_of(session, job_id) == (0, [])
    assert jobs.claim_job(session, job_id, "gpu-1 pid 7 run 9c1d", STALE, max_attempts=2).outcome == (
        jobs.ClaimOutcome.CLAIMED
    )
    assert attempts_of(session, job_id) == (1, ["gpu-1 pid 7 run 9c1d"])
    # A delivery that finds a live owner is not an attempt.
    assert jobs.claim_job(session, job_id, "gpu-2 pid 8 run 0a0a", STALE, max_attempts=2).outcome == (
        jobs.ClaimOutcome.BUSY
    )
    age_heartbeat(session, job_id, STALE + 1)  # gpu-1 died
    assert jobs.claim_job(session, job_id, "gpu-2 pid 8 run 5e5e", STALE, max_attempts=2).outcome == (
        jobs.ClaimOutcome.CLAIMED
    )
    assert attempts_of(session, job_id) == (2, ["gpu-1 pid 7 run 9c1d", "gpu-2 pid 8 run 5e5e"])

    age_heartbeat(session, job_id, STALE + 1)  # gpu-2 died too: the third worker does not run it
    claim = jobs.claim_job(session, job_id, "gpu-3 pid 9 run 7f7f", STALE, max_attempts=2)
    assert claim.outcome == jobs.ClaimOutcome.GAVE_UP and claim.job is not None
    job = claim.job
    assert job.status == "failed" and job.finished_at is not None and job.attempts == 2
    assert job.error is not None and job.error.startswith("gave up after 2 attempts: ")
    assert "last on gpu-2 pid 8 run 5e5e; before that on gpu-1 pid 7 run 9c1d" in job.error
    assert "gpu-3" not in job.error and job.params["config"] == {}  # the rest of params is kept
    assert (
        jobs.claim_job(session, job_id, "gpu-3", STALE, max_attempts=2).outcome == jobs.ClaimOutcome.FINISHED
    )

    # No limit by default (the signature callers had before).
    unlimited = new_job(session)
    for n in range(4):
        assert jobs.claim_job(session, unlimited, f"w{n}", STALE).outcome == jobs.ClaimOutcome.CLAIMED
        age_heartbeat(session, unlimited, STALE + 1)
    assert attempts_of(session, unlimited)[0] == 4


def test_a_cancel_request_wins_over_giving_up(session: Session) -> None:
    job_id = new_job(session)
    jobs.claim_job(session, job_id, "w1", STALE, max_attempts=1)
    jobs.request_cancel(session, job_id, STALE)  # running: only the flag is set
    session.commit()
    age_heartbeat(session, job_id, STALE + 1)
    claim = jobs.claim_job(session, job_id, "w2", STALE, max_attempts=1)
    assert claim.outcome == jobs.ClaimOutcome.CANCELLED and claim.job is not None
    assert claim.job.status == "cancelled" and claim.job.error is None


def test_a_clean_hand_back_does_not_use_up_an_attempt(session: Session) -> None:
    job_id = new_job(session)
    for owner in ("spot-1", "spot-2", "spot-3"):  # three spot interruptions in a row, max_attempts=1
        assert (
            jobs.claim_job(session, job_id, owner, STALE, max_attempts=1).outcome == jobs.ClaimOutcome.CLAIMED
        )
        assert attempts_of(session, job_id) == (1, [owner])
        assert jobs.release_job(session, job_id, owner)
        assert attempts_of(session, job_id) == (0, [])
    assert (
        jobs.claim_job(session, job_id, "gpu-1", STALE, max_attempts=1).outcome == jobs.ClaimOutcome.CLAIMED
    )
    # Releasing a job one does not own changes nothing.
    assert not jobs.release_job(session, job_id, "spot-3")
    assert attempts_of(session, job_id) == (1, ["gpu-1"])
    age_heartbeat(session, job_id, STALE + 1)
    claim = jobs.claim_job(session, job_id, "gpu-2", STALE, max_attempts=1)
    assert claim.outcome == jobs.ClaimOutcome.GAVE_UP and claim.job is not None and claim.job.error
    assert "gave up after 1 attempt: " in claim.job.error and "(last on gpu-1)" in claim.job.error
    assert "spot-" not in claim.job.error


def test_reaper_requeues_stale_jobs_fails_exhausted_ones_and_leaves_live_ones(session: Session) -> None:
    stale = new_job(session, celery_task_id="task-stale")
    exhausted = new_job(session)
    fresh = new_job(session)
    queued = new_job(session)
    cancel = new_job(session)
    for job_id in (stale, fresh, cancel):
        jobs.claim_job(session, job_id, f"host-{job_id[:4]}", STALE, max_attempts=2)
    for owner in ("gpu-1 pid 1 run a", "gpu-2 pid 2 run b"):
        jobs.claim_job(session, exhausted, owner, STALE, max_attempts=2)
        age_heartbeat(session, exhausted, STALE + 1)
    jobs.request_cancel(session, cancel, STALE)
    session.commit()
    for job_id in (stale, cancel):
        age_heartbeat(session, job_id, STALE + 1)
    assert {j.id for j in jobs.stale_jobs(session, STALE)} == {stale, exhausted, cancel}

    sent: list[tuple[str, str | None, str]] = []

    def requeue(job: TrainingJob) -> None:
        # Called before the row is committed as queued: a worker taking the message waits for the row.
        sent.append((job.id, job.celery_task_id, job.status))

    done = {r.job_id: r for r in jobs.reap_stale_jobs(session, STALE, 2, requeue)}
    assert set(done) == {stale, exhausted, cancel}
    assert done[stale].action == jobs.ReapAction.REQUEUED and done[stale].attempts == 1
    assert sent == [(stale, "task-stale", "running")]
    job = jobs.get_job(session, stale)
    assert job is not None and job.status == "queued" and job.heartbeat_at is None
    assert job.host == f"host-{stale[:4]}"  # names the worker that died until the next claim

    assert done[exhausted].action == jobs.ReapAction.FAILED
    job = jobs.get_job(session, exhausted)
    assert job is not None and job.status == "failed" and job.error == done[exhausted].detail
    assert job.error.startswith("gave up after 2 attempts: ") and "gpu-2 pid 2 run b" in job.error
    assert done[cancel].action == jobs.ReapAction.CANCELLED
    assert jobs.get_job(session, cancel).status == "cancelled"  # type: ignore[union-attr]
    assert jobs.get_job(session, fresh).status == "running"  # type: ignore[union-attr]
    assert jobs.get_job(session, queued).status == "queued"  # type: ignore[union-attr]

    # The requeued job's next claim is its second attempt; a second pass finds nothing to do.
    assert jobs.reap_stale_jobs(session, STALE, 2, requeue) == [] and len(sent) == 1
    claim = jobs.claim_job(session, stale, "host-new", STALE, max_attempts=2)
    assert claim.outcome == jobs.ClaimOutcome.CLAIMED and claim.job is not None and claim.job.attempts == 2


def test_reaper_leaves_a_job_running_when_its_task_cannot_be_sent(session: Session) -> None:
    job_id = new_job(session)
    jobs.claim_job(session, job_id, "w1", STALE, max_attempts=3)
    age_heartbeat(session, job_id, STALE + 1)

    def broker_down(job: TrainingJob) -> None:
        raise ConnectionError("broker unreachable")

    [reaped] = jobs.reap_stale_jobs(session, STALE, 3, broker_down)
    assert reaped.action == jobs.ReapAction.ERROR and "broker unreachable" in reaped.detail
    # Not queued without a message: still stale-running, so the next pass (or a redelivery) takes it.
    job = jobs.get_job(session, job_id)
    assert job is not None and job.status == "running" and job.host == "w1"
    assert [r.action for r in jobs.reap_stale_jobs(session, STALE, 3, lambda job: None)] == [
        jobs.ReapAction.REQUEUED
    ]
