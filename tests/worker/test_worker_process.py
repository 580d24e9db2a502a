"""Real `binwatch worker` processes against real Redis and Postgres: a worker killed mid-job, a worker
asked to stop, a job that kills every worker it runs on, and the embedded default (SQLite, no Redis)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from records import jobs
from records.orm import ModelVersion
from tests.api.support import BINWATCH
from tests.conftest import ABID
from tests.worker.conftest import Stack
from tests.worker.support import Jobs, WorkerProcess, settings_from_env, start_worker, wait_for, worker_env

pytestmark = pytest.mark.slow

# Enough photos that one epoch takes a couple of seconds on one CPU thread: room to kill inside epoch 2.
LONGER_EPOCHS = {"uri": str(ABID), "limit": 200}


def versions(helper: Jobs, job_id: str) -> list[ModelVersion]:
    with helper.sessions() as s:
        return list(s.scalars(sa.select(ModelVersion).where(ModelVersion.training_job_id == job_id)))


def unacked(stack: Stack) -> int:
    """Messages delivered but not acknowledged (kombu keeps them in a hash until ack or restore)."""
    client = redis.Redis.from_url(stack.settings.resolved_broker_url)
    try:
        return int(client.hlen(f"{stack.settings.broker_key_prefix}unacked"))
    finally:
        client.close()


def test_sigkill_during_epoch_2_resumes_on_a_new_worker(stack: Stack) -> None:
    first = stack.worker("first")
    first.wait_ready()
    job_id = stack.jobs.submit(LONGER_EPOCHS, epochs=4, policy="always")

    wait_for(lambda: stack.jobs.get(job_id).epoch >= 1, 120, "epoch 1 to be stored", interval=0.05)
    first.kill(signal.SIGKILL)  # the whole process group, like a spot instance vanishing
    first.proc.wait(timeout=10)
    killed_at = time.monotonic()
    job = stack.jobs.get(job_id)
    assert job.status == "running" and job.epoch == 1, "the kill must land inside epoch 2"
    killed_host = job.host
    # Celery's reject_on_worker_lost cannot act (the main process itself died): the message is only
    # parked as unacknowledged in Redis, which hands it out again after the visibility timeout.
    assert unacked(stack) == 1

    second = stack.worker("second")
    job = stack.jobs.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=180)
    assert job.status == "succeeded", f"{job.error}\n{stack.logs()}"
    recovered_in = time.monotonic() - killed_at

    rows = stack.jobs.epochs(job_id)
    assert [r.epoch for r in rows] == [1, 2, 3, 4]
    # Epoch 1 is the killed worker's row, untouched; epochs 2-4 were trained by the new worker after it
    # restored epoch 1's checkpoint: resumed from epoch 2, not from zero.
    assert rows[0].metrics["run"] == killed_host and rows[0].metrics["resumed_after_epoch"] == 0
    for row in rows[1:]:
        assert row.metrics["run"] == job.host != killed_host
        assert row.metrics["resumed_after_epoch"] == 1
    assert f"pid {second.pid} " in (job.host or "")
    # The same message, redelivered (not a new one): both workers received the job's one task id.
    received = f"[{job.celery_task_id}] received"
    assert received in first.log() and received in second.log()
    wait_for(lambda: unacked(stack) == 0, 15, "the new worker to acknowledge the message")
    [version] = versions(stack.jobs, job_id)  # exactly one, although two workers ran the task
    assert version.metrics["resumed_after_epoch"] == 1 and version.is_active
    assert job.model_version_id == version.id
    print(f"\nSIGKILL -> job finished on the new worker {recovered_in:.1f}s later (3 epochs trained)")


def test_sigterm_gives_the_job_back_and_another_worker_resumes_it(stack: Stack) -> None:
    first = stack.worker("first")
    first.wait_ready()
    job_id = stack.jobs.submit(LONGER_EPOCHS, epochs=3)
    wait_for(lambda: stack.jobs.get(job_id).epoch >= 1, 120, "epoch 1 to be stored", interval=0.05)

    stopped_at = time.monotonic()
    first.kill(signal.SIGTERM)  # docker stop, or a spot interruption handler
    # A generous ceiling for a loaded machine; what proves the prompt stop is the epoch below.
    first.proc.wait(timeout=90)
    print(f"\nthe worker stopped {time.monotonic() - stopped_at:.1f}s after SIGTERM")
    job = stack.jobs.get(job_id)
    # It stopped at the next batch check, not at the end of the job: at most the epoch it was in finished.
    assert job.status == "queued" and job.epoch in (1, 2), stack.logs()
    assert "goes back to the queue" in first.log()

    stack.worker("second")
    job = stack.jobs.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=180)
    assert job.status == "succeeded", f"{job.error}\n{stack.logs()}"
    rows = stack.jobs.epochs(job_id)
    assert [r.epoch for r in rows] == [1, 2, 3]
    assert rows[-1].metrics["resumed_after_epoch"] >= 1
    assert len(versions(stack.jobs, job_id)) == 1


def running_on(stack: Stack, job_id: str, worker: WorkerProcess) -> bool:
    job = stack.jobs.get(job_id)
    return job.status == "running" and f"pid {worker.pid} " in (job.host or "")


def test_a_job_whose_worker_dies_every_time_fails_after_max_attempts(stack: Stack) -> None:
    # A visibility timeout of an hour, as in production: only the reaper can bring the job back in time.
    env = {
        "BINWATCH_JOB_MAX_ATTEMPTS": "2",
        "BINWATCH_JOB_REAPER_INTERVAL_SECONDS": "0.5",
        "BINWATCH_BROKER_VISIBILITY_TIMEOUT": "3600",
    }
    started = time.monotonic()
    first = stack.worker("first", **env)
    first.wait_ready()
    job_id = stack.jobs.submit(LONGER_EPOCHS, epochs=20)
    wait_for(lambda: running_on(stack, job_id, first), 60, "the first worker to claim the job")
    first.kill(signal.SIGKILL)  # attempt 1 dies (think: the job runs the host out of memory)
    first.proc.wait(timeout=10)

    # The second worker's reaper finds the job silent, queues it again and sends its task; it claims it.
    second = stack.worker("second", **env)
    wait_for(lambda: running_on(stack, job_id, second), 60, f"the reaper to hand the job on\n{stack.logs()}")
    assert f"reaper: job {job_id}: its worker (" in second.log() and "queued again (1 of 2" in second.log()
    assert stack.jobs.get(job_id).attempts == 2
    second.kill(signal.SIGKILL)  # attempt 2 dies as well
    second.proc.wait(timeout=10)

    # Out of attempts: one pass of `binwatch jobs reap` fails the job instead of queueing it a third time.
    settings = stack.settings
    with stack.jobs.sessions() as s:
        wait_for(
            lambda: jobs.stale_jobs(s, settings.job_stale_after_seconds), 30, "the heartbeat to go stale"
        )
    reap = subprocess.run(
        [str(BINWATCH), "jobs", "reap"],
        env=dict(stack.env, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reap.returncode == 0, reap.stderr
    assert f"job {job_id}: " in reap.stdout and "failed: gave up after 2 attempts" in reap.stdout
    job = stack.jobs.get(job_id)
    assert job.status == "failed" and job.attempts == 2, stack.logs()
    assert job.error is not None and job.error.startswith("gave up after 2 attempts: the worker")
    # Both hosts are named, the newest first.
    assert job.error.index(f"pid {second.pid} ") < job.error.index(f"pid {first.pid} ")
    print(f"\ntwo workers killed, job failed with the attempts message {time.monotonic() - started:.1f}s in")


# kombu's SQLAlchemy transport uses a loader option SQLAlchemy 2.1 deprecates; harmless here.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_embedded_default_worker_needs_no_redis(tmp_path: Path) -> None:
    # No database URL, no broker URL, no artifact store: everything under BINWATCH_HOME.
    env = worker_env(database_url=None, broker_url=None, home=tmp_path / "var")
    settings = settings_from_env(env)
    assert settings.resolved_broker_url.startswith("sqla+sqlite:///")
    from records.migrate import upgrade_database

    upgrade_database(settings.resolved_database_url)
    helper = Jobs(settings)
    worker = start_worker(env, tmp_path / "logs")
    try:
        job_id = helper.submit({"uri": str(ABID), "limit": 64}, epochs=1)
        worker.wait_ready()
        job = helper.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=180)
        assert job.status == "succeeded", f"{job.error}\n{worker.log()}"
        assert len(versions(helper, job_id)) == 1
        assert (tmp_path / "var" / "broker.db").is_file() and (
            tmp_path / "var" / "artifacts" / "models"
        ).is_dir()
    finally:
        worker.stop(timeout=15)
        helper.close()
