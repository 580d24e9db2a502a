"""The stale-heartbeat reaper: brings back the jobs of workers that died, without waiting for the broker.

When a worker process dies mid-job (SIGKILL, OOM, a lost spot instance) its message stays unacknowledged,
and Redis only hands it out again after the visibility timeout, which must exceed the longest job (hours;
records/job_queue.py says why). Meanwhile the job sits ``running`` with a heartbeat that no longer moves.
Every ``binwatch worker`` therefore runs a ``Reaper`` thread: every BINWATCH_JOB_REAPER_INTERVAL_SECONDS it
sets such jobs back to ``queued`` and sends their task again, or fails them once their workers died
BINWATCH_JOB_MAX_ATTEMPTS times (records/job_leases.py reap_stale_jobs, which makes concurrent reapers
safe). ``binwatch jobs reap`` runs one pass by hand.

This module never imports the training code: the CLI command uses it on hosts without torch.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from sqlalchemy.orm import Session, sessionmaker

from records import jobs
from records.db import make_engine, make_session_factory
from records.job_queue import enqueue_training, make_celery
from records.orm import TrainingJob
from settings import Settings

log = logging.getLogger(__name__)


def describe(reaped: jobs.Reaped, settings: Settings) -> str:
    """One line for logs and the CLI: what was done to which job, and why."""
    who = f"its worker ({reaped.host})" if reaped.host else "its worker"
    silent = f"{who} sent no heartbeat for over {settings.job_stale_after_seconds:g} s"
    if reaped.action == jobs.ReapAction.REQUEUED:
        used = f"{reaped.attempts} of {settings.job_max_attempts} attempts used"
        return f"job {reaped.job_id}: {silent}; queued again ({used})"
    if reaped.action == jobs.ReapAction.FAILED:
        return f"job {reaped.job_id}: {silent}; failed: {reaped.detail}"
    if reaped.action == jobs.ReapAction.CANCELLED:
        return f"job {reaped.job_id}: {silent}; cancelled, as was requested"
    if reaped.action == jobs.ReapAction.SKIPPED:
        return f"job {reaped.job_id}: taken over or finished meanwhile; left alone"
    return f"job {reaped.job_id}: {silent}; could not be queued again ({reaped.detail}); next pass retries"


def move_stalled_studies() -> None:
    """Tuning jobs left running with no trial job queued or running (the worker that should have moved
    them on failed to): add their next trials or finish them (worker/trials.py)."""
    from records import tuning_jobs
    from worker.runner import resources
    from worker.trials import continue_study

    res = resources()
    with res.sessions() as session:
        stalled = tuning_jobs.stalled(session)
    for tuning_id in stalled:
        log.warning("reaper: tuning job %s has no trial running; moving it on", tuning_id)
        continue_study(res, tuning_id)


def reap_once(sessions: sessionmaker[Session], settings: Settings, celery: Celery) -> list[jobs.Reaped]:
    """One pass over the stale running jobs; logs each action at WARNING and returns them."""

    def requeue(job: TrainingJob) -> None:
        # The job's own task id: the API and the logs know the job's task under that one id.
        task_id = job.celery_task_id or uuid.uuid4().hex
        soft = (job.params or {}).get("time_limit_seconds")
        enqueue_training(celery, settings, job.id, task_id, int(soft) if soft else None)

    with sessions() as session:
        done = jobs.reap_stale_jobs(
            session, settings.job_stale_after_seconds, settings.job_max_attempts, requeue
        )
    for reaped in done:
        if reaped.action != jobs.ReapAction.SKIPPED:
            log.warning("reaper: %s", describe(reaped, settings))
    return done


class Reaper(threading.Thread):
    """A daemon thread that calls ``reap_once`` now and then every ``job_reaper_interval_seconds``.

    It has its own database engine and its own (producer) Celery app: it shares no connection with the
    worker's task, so a pass can neither block a running job nor be blocked by one.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="job-reaper", daemon=True)
        self.settings = settings
        self.stopped = threading.Event()

    def run(self) -> None:
        engine = make_engine(self.settings.resolved_database_url)
        sessions = make_session_factory(engine)
        celery = make_celery(self.settings, producer=True, main="binwatch-reaper")
        try:
            while not self.stopped.is_set():
                try:
                    reap_once(sessions, self.settings, celery)
                except Exception:  # noqa: BLE001 - a database or broker blip: the next pass tries again
                    log.warning("reaper: pass failed; trying again in %gs", self.interval, exc_info=True)
                try:
                    move_stalled_studies()
                except Exception:  # noqa: BLE001 - as above
                    log.warning("reaper: could not move stalled tuning jobs on", exc_info=True)
                self.stopped.wait(self.interval)
        finally:
            celery.close()
            engine.dispose()

    @property
    def interval(self) -> float:
        return self.settings.job_reaper_interval_seconds

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped.set()
        self.join(timeout=timeout)


def install(app: Celery, settings: Settings) -> None:
    """Run a ``Reaper`` in every worker of ``app``: started once the worker is ready, stopped at shutdown.

    Only in the worker's main process (where Celery sends these signals), so one per worker whatever its
    pool; with prefork the children are forked before the thread starts or from a process whose reaper
    they do not use.
    """
    state: dict[str, Reaper] = {}

    def start(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is not app or "reaper" in state:
            return
        reaper = state["reaper"] = Reaper(settings)
        reaper.start()
        log.info("reaper: checking for stale jobs every %gs", settings.job_reaper_interval_seconds)

    def stop(sender: Any = None, **_: Any) -> None:
        reaper = state.pop("reaper", None)
        if reaper is not None:
            reaper.stop()

    # weak=False: the receivers are closures that nothing else holds on to.
    worker_ready.connect(start, weak=False)
    worker_shutdown.connect(stop, weak=False)
