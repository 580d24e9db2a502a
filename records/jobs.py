"""Training-job queries and state transitions, shared by the API (submit, list, cancel) and the worker.

A job's life: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled`` (a queued job may
also go straight to ``cancelled`` or, when it could not be queued, to ``failed``). Every transition is
one conditional UPDATE, so the API and any number of workers can race on the same row without a lock
and without a transition being applied twice: whoever's WHERE clause still matches wins.

A running job has exactly one live owner: the worker whose ``owner`` token is in ``host`` and who keeps
``heartbeat_at`` fresh. Another delivery of the same task (Redis redelivers a message whose worker died,
or one unacknowledged for longer than the visibility timeout, or the reaper sends it again) may take the
job over only once that heartbeat is stale; an owner that finds its token replaced stops without touching
the job. Claiming, handing back, the attempts limit and the reaper live in records/job_leases.py; their
names are re-exported here, so callers keep using ``records.jobs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from records.job_leases import (
    Claim,
    ClaimOutcome,
    ReapAction,
    Reaped,
    claim_job,
    claimable,
    gave_up_message,
    reap_stale_jobs,
    release_job,
    stale_cutoff,
    stale_jobs,
)
from records.job_leases import owned as _owned
from records.orm import JOB_FINISHED_STATUSES, EpochMetric, TrainingJob, utcnow
from records.paging import Page

__all__ = [
    "ACTIVE_STATUSES",
    "CancelOutcome",
    "Claim",
    "ClaimOutcome",
    "ReapAction",
    "Reaped",
    "cancel_requested",
    "claim_job",
    "create_job",
    "epoch_metrics",
    "fail_running",
    "finish_job",
    "gave_up_message",
    "get_job",
    "heartbeat",
    "latest_epochs",
    "list_jobs",
    "mark_not_queued",
    "reap_stale_jobs",
    "record_epoch",
    "release_job",
    "request_cancel",
    "stale_jobs",
]

ACTIVE_STATUSES = ("queued", "running")


# ---------------------------------------------------------------------------------------------- API side


def create_job(
    session: Session,
    *,
    dataset: dict[str, Any],
    params: dict[str, Any],
    promotion_policy: str,
    epochs: int,
    celery_task_id: str | None = None,
    nodes: int = 1,
    procs_per_node: int = 1,
) -> TrainingJob:
    """Insert a queued job and flush it (the caller commits *before* queueing the task)."""
    job = TrainingJob(
        status="queued",
        dataset=dataset,
        params=params,
        promotion_policy=promotion_policy,
        epochs=epochs,
        celery_task_id=celery_task_id,
        nodes=nodes,
        procs_per_node=procs_per_node,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str) -> TrainingJob | None:
    return session.get(TrainingJob, job_id)


def list_jobs(
    session: Session,
    *,
    status: Sequence[str] | None = None,
    before: str | None = None,
    limit: int = 50,
    trials: bool = True,
) -> Page[TrainingJob]:
    """Jobs, newest first; pass ``next_cursor`` (a job id) as ``before`` for the next page. ``trials``
    False leaves out tuning trials (the console lists them under their study)."""
    query = (
        sa.select(TrainingJob).order_by(TrainingJob.created_at.desc(), TrainingJob.id.desc()).limit(limit + 1)
    )
    if status:
        query = query.where(TrainingJob.status.in_(list(status)))
    if not trials:
        query = query.where(TrainingJob.tuning_job_id.is_(None))
    if before is not None:
        anchor = session.get(TrainingJob, before)
        if anchor is None:
            raise LookupError(f"cursor {before!r} names no training job")
        query = query.where(
            sa.or_(
                TrainingJob.created_at < anchor.created_at,
                sa.and_(TrainingJob.created_at == anchor.created_at, TrainingJob.id < anchor.id),
            )
        )
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=rows[-1].id if more and rows else None)


def latest_epochs(session: Session, job_ids: Sequence[str]) -> dict[str, EpochMetric]:
    """The newest epoch row of each job (one query, for listings)."""
    if not job_ids:
        return {}
    newest = (
        sa.select(EpochMetric.job_id, sa.func.max(EpochMetric.epoch).label("epoch"))
        .where(EpochMetric.job_id.in_(list(job_ids)))
        .group_by(EpochMetric.job_id)
        .subquery()
    )
    rows = session.scalars(
        sa.select(EpochMetric).join(
            newest, sa.and_(EpochMetric.job_id == newest.c.job_id, EpochMetric.epoch == newest.c.epoch)
        )
    )
    return {row.job_id: row for row in rows}


def epoch_metrics(session: Session, job_id: str) -> list[EpochMetric]:
    return list(
        session.scalars(
            sa.select(EpochMetric).where(EpochMetric.job_id == job_id).order_by(EpochMetric.epoch)
        )
    )


def mark_not_queued(session: Session, job_id: str, reason: str) -> bool:
    """A job whose task never reached the broker: ``failed`` with ``reason``; it must not pose as queued."""
    now = utcnow()
    result = session.execute(
        sa.update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status == "queued")
        .values(status="failed", error=reason, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # it was queued (or its worker is gone): cancelled right away
    REQUESTED = "requested"  # it is running: the worker stops within seconds
    FINISHED = "finished"  # nothing to cancel
    NOT_FOUND = "not_found"


def request_cancel(
    session: Session, job_id: str, stale_after_s: float
) -> tuple[CancelOutcome, TrainingJob | None]:
    """Cancel a job. A running one only gets its flag set; its worker sees it at the next batch."""
    now = utcnow()
    # A queued job, or a running one whose worker has stopped sending heartbeats, has nobody who would act
    # on the flag soon (a dead worker's task comes back only after the reaper's next pass): cancel it here.
    cancelled = session.execute(
        sa.update(TrainingJob)
        .where(TrainingJob.id == job_id, claimable(stale_cutoff(stale_after_s, now)))
        .values(status="cancelled", cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    outcome = CancelOutcome.CANCELLED
    if not cancelled:
        requested = session.execute(
            sa.update(TrainingJob)
            .where(TrainingJob.id == job_id, TrainingJob.status == "running")
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        ).rowcount
        outcome = CancelOutcome.REQUESTED if requested else CancelOutcome.FINISHED
    job = session.get(TrainingJob, job_id, populate_existing=True)
    if job is None:
        return CancelOutcome.NOT_FOUND, None
    return outcome, job


# ------------------------------------------------------------------------------------------- worker side


def heartbeat(session: Session, job_id: str, owner: str) -> bool:
    """Mark the job alive; False when this worker no longer owns it (taken over, or finished elsewhere)."""
    result = session.execute(
        sa.update(TrainingJob)
        .where(_owned(job_id, owner))
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount)


def cancel_requested(session: Session, job_id: str) -> bool:
    value = session.scalar(sa.select(TrainingJob.cancel_requested).where(TrainingJob.id == job_id))
    session.commit()  # end the read transaction, so the next poll sees new commits on any isolation level
    return bool(value)


def _upsert(session: Session, values: dict[str, Any]) -> None:
    """INSERT … ON CONFLICT (job_id, epoch) DO UPDATE, on Postgres and SQLite alike."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - records.db only builds engines for these two
        raise ValueError(f"unsupported database dialect {dialect}")
    stmt = insert(EpochMetric).values(**values)
    update = {k: stmt.excluded[k] for k in values if k not in ("job_id", "epoch")}
    session.execute(stmt.on_conflict_do_update(index_elements=["job_id", "epoch"], set_=update))


def record_epoch(
    session: Session,
    job_id: str,
    owner: str,
    *,
    epoch: int,
    train_loss: float,
    val_loss: float | None,
    val_accuracy: float | None,
    val_rmse: float | None,
    duration_s: float,
    metrics: dict[str, Any],
) -> bool:
    """Store one finished epoch and advance ``job.epoch``; False (and nothing written) if not the owner.

    Idempotent: a redelivered task that trains an epoch again replaces that epoch's row.
    """
    now = utcnow()
    moved = session.execute(
        sa.update(TrainingJob)
        .where(_owned(job_id, owner))
        .values(epoch=epoch, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not moved:
        session.rollback()
        return False
    _upsert(
        session,
        {
            "job_id": job_id,
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "val_rmse": val_rmse,
            "duration_s": duration_s,
            "metrics": metrics,
            "created_at": now,
        },
    )
    session.commit()
    return True


def finish_job(
    session: Session,
    job_id: str,
    owner: str,
    status: str,
    *,
    error: str | None = None,
    promotion_decision: str | None = None,
    model_version_id: int | None = None,
    commit: bool = True,
) -> bool:
    """End an owned running job; False when this worker no longer owns it."""
    if status not in JOB_FINISHED_STATUSES:
        raise ValueError(f"{status!r} is not a final job status")
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    if promotion_decision is not None:
        values["promotion_decision"] = promotion_decision
    if model_version_id is not None:
        values["model_version_id"] = model_version_id
    result = session.execute(
        sa.update(TrainingJob)
        .where(_owned(job_id, owner))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if commit:
        session.commit()
    return bool(result.rowcount)


def fail_running(session: Session, job_id: str, error: str) -> bool:
    """Fail a running job whoever owns it: its task was killed (Celery's hard time limit), so no owner
    is left to do it. Does nothing to a job that already ended."""
    result = session.execute(
        sa.update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status.in_(ACTIVE_STATUSES))
        .values(status="failed", error=error, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)
