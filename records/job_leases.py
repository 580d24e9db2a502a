"""Who runs a training job: claiming it, handing it back, counting attempts, reaping dead workers' jobs.

The worker-side half of the job state machine (records/jobs.py has the rest and re-exports these names).

Invariants:

- A running job has exactly one live owner: the worker whose ``owner`` token is in ``host`` and who keeps
  ``heartbeat_at`` fresh. A job is *claimable* when it is queued, or running with a heartbeat older than
  ``stale_after_s`` (its worker died). Every transition is one conditional UPDATE whose WHERE clause
  re-checks that, so two workers, or a worker and a reaper, never both act on the same row.
- ``attempts`` counts the claims whose worker did not hand the job back: ``claim_job`` adds one in the
  UPDATE that claims, ``release_job`` (a clean hand-back on SIGTERM) takes it back. So on a claimable job,
  ``attempts`` is the number of workers that died running it. Once that reaches ``max_attempts`` the job
  is failed instead of being handed out again: a job that kills its worker (OOM, a driver crash) would
  otherwise take down every worker of the fleet in turn, forever.
- ``params["attempt_hosts"]`` lists the owner tokens of those attempts (newest last, at most
  ``MAX_ATTEMPT_HOSTS``), so the failure can say where to look. It is written in the claim's transaction,
  while the claim's UPDATE holds the row lock, by assigning a new dict (JSON columns do not track edits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from records.orm import JOB_FINISHED_STATUSES, TrainingJob, utcnow

#: How many owner tokens ``params["attempt_hosts"]`` keeps (the newest).
MAX_ATTEMPT_HOSTS = 10
ATTEMPT_HOSTS_KEY = "attempt_hosts"


# ------------------------------------------------------------------------------------------ predicates


def stale_cutoff(stale_after_s: float, now: datetime | None = None) -> datetime:
    """Heartbeats older than this are stale: the worker that wrote them is presumed dead."""
    return (now or utcnow()) - timedelta(seconds=stale_after_s)


def stale_running(cutoff: datetime) -> sa.ColumnElement[bool]:
    """Running, but its worker stopped sending heartbeats before ``cutoff``."""
    return sa.and_(
        TrainingJob.status == "running",
        sa.or_(TrainingJob.heartbeat_at.is_(None), TrainingJob.heartbeat_at < cutoff),
    )


def claimable(cutoff: datetime) -> sa.ColumnElement[bool]:
    """Nobody alive runs it: queued, or running with a stale heartbeat."""
    return sa.or_(TrainingJob.status == "queued", stale_running(cutoff))


def owned(job_id: str, owner: str) -> sa.ColumnElement[bool]:
    """Running, and ``owner`` is the one running it."""
    return sa.and_(TrainingJob.id == job_id, TrainingJob.status == "running", TrainingJob.host == owner)


def _out_of_attempts(max_attempts: int | None) -> sa.ColumnElement[bool]:
    if max_attempts is None:
        return sa.false()
    return TrainingJob.attempts >= max_attempts


# ------------------------------------------------------------------------------------------ attempts


def attempt_hosts(params: dict[str, Any] | None, host: str | None) -> list[str]:
    """The owner tokens of the job's attempts, oldest first (just ``host`` for rows older than the list)."""
    hosts = [str(h) for h in (params or {}).get(ATTEMPT_HOSTS_KEY) or []]
    if not hosts and host:
        hosts = [host]
    return hosts


def gave_up_message(attempts: int, hosts: Sequence[str]) -> str:
    """The ``error`` of a job failed for running out of attempts; names the count and the hosts."""
    shown = list(hosts)[-attempts:] if attempts > 0 else list(hosts)
    where = ""
    if shown:
        where = f" (last on {shown[-1]}"
        if len(shown) > 1:
            where += f"; before that on {', '.join(reversed(shown[:-1]))}"
        where += ")"
    return (
        f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}: the worker running the job died "
        f"each time{where}; see the worker logs of those hosts (out of memory, a crash, a killed process)"
    )


def _set_attempt_hosts(session: Session, job_id: str, edit: Callable[[list[str]], list[str]]) -> None:
    """Rewrite ``params["attempt_hosts"]``; only call while this transaction holds the row (see module)."""
    row = session.execute(sa.select(TrainingJob.params).where(TrainingJob.id == job_id)).one_or_none()
    if row is None:
        return
    params = dict(row.params or {})
    hosts = edit([str(h) for h in params.get(ATTEMPT_HOSTS_KEY) or []])
    params[ATTEMPT_HOSTS_KEY] = hosts[-MAX_ATTEMPT_HOSTS:]
    session.execute(
        sa.update(TrainingJob)
        .where(TrainingJob.id == job_id)
        .values(params=params)
        .execution_options(synchronize_session=False)
    )


def _give_up(
    session: Session, job_id: str, nobody_runs_it: sa.ColumnElement[bool], max_attempts: int
) -> str | None:
    """Fail a job nobody runs whose workers died ``max_attempts`` times; returns the error, None if the
    row did not qualify (any more). Never fails a job with a cancel request: that one is cancelled."""
    where = sa.and_(
        TrainingJob.id == job_id,
        nobody_runs_it,
        TrainingJob.cancel_requested.is_(False),
        TrainingJob.attempts >= max_attempts,
    )
    row = session.execute(
        sa.select(TrainingJob.attempts, TrainingJob.host, TrainingJob.params).where(where)
    ).one_or_none()
    if row is None:
        return None
    error = gave_up_message(row.attempts, attempt_hosts(row.params, row.host))
    # Nothing can have changed the attempts or hosts in between (no claim succeeds on such a row); the
    # WHERE clause is repeated so that a cancel, or another reaper, in between wins instead.
    failed = session.execute(
        sa.update(TrainingJob)
        .where(where)
        .values(status="failed", error=error, finished_at=utcnow(), heartbeat_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    return error if failed else None


# --------------------------------------------------------------------------------------------- claims


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"  # this worker now owns the job and runs it
    FINISHED = "finished"  # a redelivered task for a job that already ended: nothing to do
    BUSY = "busy"  # another worker is alive and running it
    CANCELLED = "cancelled"  # cancel was requested while nobody was running it
    GAVE_UP = "gave_up"  # its workers died max_attempts times: failed now, not run again
    MISSING = "missing"  # no such job (deleted, or the task came from another deployment)


@dataclass
class Claim:
    outcome: ClaimOutcome
    job: TrainingJob | None


def claim_job(
    session: Session, job_id: str, owner: str, stale_after_s: float, max_attempts: int | None = None
) -> Claim:
    """Take ownership of a claimable job (queued, or running with a stale heartbeat) and count the attempt.

    ``max_attempts`` None: no limit. Otherwise a claimable job whose workers already died that many
    times is failed (``GAVE_UP``, with an error naming the attempts and hosts) instead of being run.
    Commits before returning.
    """
    now = utcnow()
    takeable = claimable(stale_cutoff(stale_after_s, now))
    within = sa.true() if max_attempts is None else TrainingJob.attempts < max_attempts
    won = session.execute(
        sa.update(TrainingJob)
        .where(TrainingJob.id == job_id, takeable, TrainingJob.cancel_requested.is_(False), within)
        .values(
            status="running",
            host=owner,
            heartbeat_at=now,
            started_at=sa.func.coalesce(TrainingJob.started_at, now),
            attempts=TrainingJob.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if won:
        _set_attempt_hosts(session, job_id, lambda hosts: [*hosts, owner])
        session.commit()
        return Claim(ClaimOutcome.CLAIMED, session.get(TrainingJob, job_id, populate_existing=True))
    # Cancel requested while nobody was running it (queued, or its worker died): finish it as cancelled.
    cancelled = session.execute(
        sa.update(TrainingJob)
        .where(TrainingJob.id == job_id, takeable, TrainingJob.cancel_requested.is_(True))
        .values(status="cancelled", finished_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    gave_up = None
    if not cancelled and max_attempts is not None:
        gave_up = _give_up(session, job_id, takeable, max_attempts)
    session.commit()
    job = session.get(TrainingJob, job_id, populate_existing=True)
    if job is None:
        return Claim(ClaimOutcome.MISSING, None)
    if cancelled:
        return Claim(ClaimOutcome.CANCELLED, job)
    if gave_up:
        return Claim(ClaimOutcome.GAVE_UP, job)
    if job.status in JOB_FINISHED_STATUSES:
        return Claim(ClaimOutcome.FINISHED, job)
    return Claim(ClaimOutcome.BUSY, job)


def release_job(session: Session, job_id: str, owner: str, give_back_attempt: bool = True) -> bool:
    """Give an owned running job back to the queue (worker shutting down): queued, resumable anywhere.

    The attempt is given back too: the worker did not die, it handed the job over cleanly (SIGTERM, a
    spot interruption notice), and a job on a fleet that scales in often must not run out of attempts.
    ``give_back_attempt=False``: a host of its training group was lost, which counts like a dead worker.
    """
    attempts = (
        sa.case((TrainingJob.attempts > 0, TrainingJob.attempts - 1), else_=0)
        if give_back_attempt
        else TrainingJob.attempts
    )
    result = session.execute(
        sa.update(TrainingJob)
        .where(owned(job_id, owner))
        .values(status="queued", heartbeat_at=None, attempts=attempts)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount and give_back_attempt:
        _set_attempt_hosts(session, job_id, lambda hosts: _without_last(hosts, owner))
    session.commit()
    return bool(result.rowcount)


def _without_last(hosts: list[str], owner: str) -> list[str]:
    for i in range(len(hosts) - 1, -1, -1):
        if hosts[i] == owner:
            return hosts[:i] + hosts[i + 1 :]
    return hosts


# -------------------------------------------------------------------------------------------- reaper


class ReapAction(StrEnum):
    REQUEUED = "requeued"  # back to queued, its task sent again
    FAILED = "failed"  # out of attempts
    CANCELLED = "cancelled"  # a cancel was requested before its worker died
    ERROR = "error"  # the broker refused the task, or the database failed: left as it was, tried next pass
    SKIPPED = "skipped"  # something else acted on it first (a redelivery took it over, another reaper)


@dataclass(frozen=True)
class Reaped:
    job_id: str
    action: ReapAction
    attempts: int
    host: str | None
    detail: str = ""


def stale_jobs(session: Session, stale_after_s: float) -> list[TrainingJob]:
    """Running jobs whose heartbeat is older than ``stale_after_s``: their worker died (or is cut off)."""
    query = (
        sa.select(TrainingJob)
        .where(stale_running(stale_cutoff(stale_after_s)))
        .order_by(TrainingJob.heartbeat_at.asc().nulls_first(), TrainingJob.id)
    )
    jobs = list(session.scalars(query))
    session.commit()  # end the read transaction: each job is then acted on in its own
    return jobs


def reap_stale_jobs(
    session: Session,
    stale_after_s: float,
    max_attempts: int | None,
    requeue: Callable[[TrainingJob], None],
) -> list[Reaped]:
    """Act on every stale running job: fail it when out of attempts, cancel it when cancel was requested,
    else set it back to queued and call ``requeue(job)`` (which sends its task again).

    The broker only redelivers a dead worker's message after its visibility timeout (hours, by design),
    so without this a job whose worker died waits that long. Each job is one transaction whose UPDATE
    re-checks that the job is still stale: two reapers, or a reaper and a redelivered task, never both act.
    ``requeue`` runs before that transaction commits, so a broker that refuses the task leaves the job
    stale-running for the next pass rather than queued with no message; a message that arrives before
    the commit simply waits for the row. A duplicate message is harmless: a job has one live owner.
    """
    done: list[Reaped] = []
    for job in stale_jobs(session, stale_after_s):
        # Read now: a rollback expires the instance, and reloading it may fail the same way.
        job_id, attempts, host = job.id, job.attempts, job.host
        try:
            done.append(_reap_one(session, job, stale_after_s, max_attempts, requeue))
            session.commit()
        except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the others
            session.rollback()
            done.append(Reaped(job_id, ReapAction.ERROR, attempts, host, str(exc)))
    return done


def _reap_one(
    session: Session,
    job: TrainingJob,
    stale_after_s: float,
    max_attempts: int | None,
    requeue: Callable[[TrainingJob], None],
) -> Reaped:
    now = utcnow()
    still_stale = sa.and_(TrainingJob.id == job.id, stale_running(stale_cutoff(stale_after_s, now)))
    if max_attempts is not None:
        error = _give_up(session, job.id, still_stale, max_attempts)
        if error:
            return Reaped(job.id, ReapAction.FAILED, job.attempts, job.host, error)
    cancelled = session.execute(
        sa.update(TrainingJob)
        .where(still_stale, TrainingJob.cancel_requested.is_(True))
        .values(status="cancelled", finished_at=now, heartbeat_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    if cancelled:
        return Reaped(job.id, ReapAction.CANCELLED, job.attempts, job.host)
    # The host is kept: it names the worker that died until the next claim replaces it.
    requeued = session.execute(
        sa.update(TrainingJob)
        .where(still_stale, sa.not_(_out_of_attempts(max_attempts)))
        .values(status="queued", heartbeat_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not requeued:
        return Reaped(job.id, ReapAction.SKIPPED, job.attempts, job.host)
    requeue(job)
    return Reaped(job.id, ReapAction.REQUEUED, job.attempts, job.host)
