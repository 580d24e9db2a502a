"""Tuning-job queries and state transitions, shared by the API (submit, list, show, cancel) and the workers
(which run the trials and finish the study; worker/trials.py).

A tuning job's life: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled``. Its trials
are ordinary training jobs (``training_jobs.tuning_job_id``), run by whichever worker takes them.

Who adds trials: the API adds the first ``parallelism`` trial jobs; after that, every trial job that ends
(or that a redelivered message finds ended) calls ``plan_trials`` under the tuning row's lock and adds as
many as keep ``parallelism`` running, until ``trials`` trial jobs exist, the time limit has passed, or
the job was cancelled. The budget counts trial jobs whatever their end (complete, pruned or failed), as
Optuna counts trials. The lock is a no-op UPDATE of the tuning row: a row lock on Postgres, the write lock
on SQLite, so two workers finishing trials at the same moment cannot both add the last trial.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from records.orm import TUNING_FINISHED_STATUSES, TrainingJob, TuningJob, utcnow
from records.paging import Page

ACTIVE_STATUSES = ("queued", "running")


def create_tuning_job(
    session: Session,
    *,
    dataset: dict[str, Any],
    params: dict[str, Any],
    trials: int,
    parallelism: int,
    timeout_s: int | None,
    promotion_policy: str,
) -> TuningJob:
    job = TuningJob(
        status="running",
        dataset=dataset,
        params=params,
        trials=trials,
        parallelism=parallelism,
        timeout_s=timeout_s,
        promotion_policy=promotion_policy,
        pictures={},
        started_at=utcnow(),
    )
    session.add(job)
    session.flush()
    return job


def get_tuning_job(session: Session, tuning_id: str) -> TuningJob | None:
    return session.get(TuningJob, tuning_id, populate_existing=True)


def list_tuning_jobs(
    session: Session, *, status: Sequence[str] | None = None, before: str | None = None, limit: int = 50
) -> Page[TuningJob]:
    query = sa.select(TuningJob)
    if status:
        query = query.where(TuningJob.status.in_(list(status)))
    if before is not None:
        cursor = session.get(TuningJob, before)
        if cursor is None:
            raise LookupError(f"unknown cursor {before!r}: pass the next_cursor of the previous page")
        query = query.where(
            sa.or_(
                TuningJob.created_at < cursor.created_at,
                sa.and_(TuningJob.created_at == cursor.created_at, TuningJob.id < cursor.id),
            )
        )
    rows = list(
        session.scalars(query.order_by(TuningJob.created_at.desc(), TuningJob.id.desc()).limit(limit + 1))
    )
    more = len(rows) > limit
    return Page(rows[:limit], rows[limit - 1].id if more else None)


def trial_jobs(session: Session, tuning_id: str) -> list[TrainingJob]:
    """The study's trial jobs, oldest first."""
    return list(
        session.scalars(
            sa.select(TrainingJob)
            .where(TrainingJob.tuning_job_id == tuning_id)
            .order_by(TrainingJob.created_at, TrainingJob.id)
            .execution_options(populate_existing=True)
        )
    )


def lock(session: Session, tuning_id: str) -> TuningJob | None:
    """Serialise decisions about this study's trials until the transaction ends (see the module doc)."""
    session.execute(
        sa.update(TuningJob)
        .where(TuningJob.id == tuning_id)
        .values(status=TuningJob.status)
        .execution_options(synchronize_session=False)
    )
    return session.get(TuningJob, tuning_id, populate_existing=True)


@dataclass(frozen=True)
class Plan:
    add: int  # trial jobs to add now
    active: int  # trial jobs queued or running
    created: int  # trial jobs so far
    closed: str | None  # why no more trials will be added, once that is so


def plan_trials(session: Session, job: TuningJob, now: datetime | None = None) -> Plan:
    """How many trial jobs to add now; the caller holds ``lock``."""
    now = now or utcnow()
    trials = trial_jobs(session, job.id)
    active = sum(1 for t in trials if t.status in ACTIVE_STATUSES)
    closed = None
    if job.status in TUNING_FINISHED_STATUSES or job.cancel_requested:
        closed = f"the tuning job is {job.status}"
    elif len(trials) >= job.trials:
        closed = f"all {job.trials} trials were started"
    elif job.timeout_s is not None and job.started_at is not None:
        if now >= job.started_at + timedelta(seconds=job.timeout_s):
            closed = f"its time limit of {job.timeout_s} s has passed"
    if closed is not None:
        return Plan(0, active, len(trials), closed)
    return Plan(max(0, min(job.parallelism - active, job.trials - len(trials))), active, len(trials), None)


def add_trial_job(session: Session, job: TuningJob) -> TrainingJob:
    """A queued training job that will run one trial of ``job`` (its parameters are asked when it starts)."""
    params = dict(job.params)
    trial = TrainingJob(
        status="queued",
        dataset=dict(job.dataset),
        params={
            "hyperparameters": params.get("hyperparameters") or {},
            "config": params["config"],
            "time_limit_seconds": params.get("time_limit_seconds"),
            "submitted_by": params.get("submitted_by"),
            "tuning": {"job": job.id},
        },
        # A trial never registers a model of its own: the study registers its best trial's.
        promotion_policy="never",
        epochs=int(params["config"]["epochs"]),
        celery_task_id=uuid.uuid4().hex,
        tuning_job_id=job.id,
    )
    session.add(trial)
    session.flush()
    return trial


def set_trial(
    session: Session, job_id: str, number: int, trial_params: dict[str, Any], config: dict[str, Any]
) -> None:
    """Record which Optuna trial a trial job runs, with the parameters it was given."""
    job = session.get(TrainingJob, job_id, populate_existing=True)
    assert job is not None
    params = dict(job.params)
    params["tuning"] = {**params.get("tuning", {}), "trial": number, "params": trial_params}
    params["config"] = config
    job.params = params
    job.trial_number = number
    job.epochs = int(config["epochs"])


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"
    FINISHED = "finished"
    NOT_FOUND = "not_found"


def request_cancel(session: Session, tuning_id: str) -> tuple[CancelOutcome, TuningJob | None]:
    """Cancel the study: no more trials; queued trials cancelled now, running ones flagged (their workers
    stop them at the next batch); no model version is registered (the finisher checks the status)."""
    now = utcnow()
    done = session.execute(
        sa.update(TuningJob)
        .where(TuningJob.id == tuning_id, TuningJob.status.in_(ACTIVE_STATUSES))
        .values(status="cancelled", cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if done:
        session.execute(
            sa.update(TrainingJob)
            .where(TrainingJob.tuning_job_id == tuning_id, TrainingJob.status == "queued")
            .values(status="cancelled", cancel_requested=True, finished_at=now)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            sa.update(TrainingJob)
            .where(TrainingJob.tuning_job_id == tuning_id, TrainingJob.status == "running")
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
    job = get_tuning_job(session, tuning_id)
    if job is None:
        return CancelOutcome.NOT_FOUND, None
    return (CancelOutcome.CANCELLED if done else CancelOutcome.FINISHED), job


def finish(session: Session, tuning_id: str, status: str, **values: Any) -> bool:
    """End a running study (``succeeded`` or ``failed``); False if it already ended (e.g. cancelled)."""
    if status not in TUNING_FINISHED_STATUSES:
        raise ValueError(f"{status!r} is not a final tuning status")
    return bool(
        session.execute(
            sa.update(TuningJob)
            .where(TuningJob.id == tuning_id, TuningJob.status.in_(ACTIVE_STATUSES))
            .values(status=status, finished_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        ).rowcount
    )


def stalled(session: Session) -> list[str]:
    """Running tuning jobs none of whose trial jobs is queued or running."""
    active = (
        sa.select(TrainingJob.id)
        .where(TrainingJob.tuning_job_id == TuningJob.id, TrainingJob.status.in_(ACTIVE_STATUSES))
        .exists()
    )
    return list(session.scalars(sa.select(TuningJob.id).where(TuningJob.status == "running", ~active)))
