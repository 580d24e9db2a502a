"""The Celery task: a thin shell around worker.runner that turns its outcome into an ack or a requeue."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject, TimeLimitExceeded

from records.job_queue import JOIN_TASK, TRAIN_TASK
from worker.runner import Outcome, fail_abandoned, resources, run_job

log = logging.getLogger(__name__)


def worker_shutting_down() -> bool:
    """True once this worker was asked to stop (SIGTERM, e.g. a spot interruption notice or docker stop).

    The running job then stops at the next batch and goes back to the queue, instead of holding the
    shutdown until the job ends (hours) or being killed with the work since its last checkpoint lost.
    Only the process running the task sees the flag: with the solo pool that is the worker itself.
    """
    from celery.worker import state

    # The flags hold the exit code once set, and 0 (EX_OK) is a valid one.
    return any(flag is not None and flag is not False for flag in (state.should_stop, state.should_terminate))


class TrainingTask(Task):
    """Records on the job what the task itself cannot: that Celery killed it."""

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # A hard time limit (prefork pool) kills the child running the job; Celery then calls this in the
        # worker's main process, the only one left that can mark the job failed.
        if isinstance(exc, TimeLimitExceeded) and args:
            job_id = str(args[0])
            limit = f" of {exc.args[0]} s" if exc.args else ""
            try:
                fail_abandoned(
                    resources().sessions, job_id, f"hard time limit{limit} exceeded; the job was killed"
                )
            except Exception:  # noqa: BLE001 - logging is all that is left to do
                log.exception("could not mark job %s failed after its hard time limit", job_id)


def register_tasks(app: Celery) -> None:
    """Register the training task on ``app`` under ``TRAIN_TASK`` and the join task under ``JOIN_TASK``."""

    @app.task(
        name=TRAIN_TASK,
        bind=True,
        base=TrainingTask,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        # Failures are recorded on the job; Celery must not retry on its own (a retry is a new message,
        # which would not carry the "resume" semantics the redelivered one has).
        autoretry_for=(),
    )
    def train_job(self: Task, job_id: str) -> str:
        res = resources()
        outcome = run_job(job_id, res, shutdown_requested=worker_shutting_down)
        if outcome == Outcome.BUSY:
            # Another worker is alive and running this job. Wait a little so this does not spin, then
            # give the message back: if that worker dies, a later delivery takes over from it.
            time.sleep(min(res.settings.job_heartbeat_seconds, 10.0))
            raise Reject(f"job {job_id} is running on another worker", requeue=True)
        if outcome == Outcome.REQUEUE:
            raise Reject(f"worker shutting down; job {job_id} goes back to the queue", requeue=True)
        return outcome.value

    @app.task(
        name=JOIN_TASK,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=False,
        ignore_result=True,
        autoretry_for=(),
    )
    def join_group(self: Task, job_id: str, group_id: str, node_rank: int) -> str:
        # A join message is never put back: if this node's group breaks, node 0 (or the reaper) queues the
        # job again and its next group sends fresh join messages; an old one finds its group gone.
        from worker.groups import run_member

        return run_member(job_id, group_id, int(node_rank), resources(), worker_shutting_down).value
