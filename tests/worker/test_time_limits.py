"""Celery's own soft time limit on a real prefork worker: the limit interrupts the job wherever it is (here,
while it decodes its photos, before the first batch where the runner's own deadline would be checked), and
the job fails saying so, instead of the worker being killed at the hard limit. The runner's deadline between
batches is tests/worker/test_runner.py; the hard limit's clean-up is there too."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from records.job_queue import enqueue_training
from records.orm import TrainingJob
from tests.conftest import ABID
from tests.worker.conftest import Stack

pytestmark = pytest.mark.slow


def test_celerys_soft_time_limit_fails_the_job_where_it_stands(stack: Stack) -> None:
    worker = stack.worker(
        "prefork", BINWATCH_WORKER_POOL="prefork", BINWATCH_JOB_TIME_LIMIT_GRACE_SECONDS="60"
    )
    worker.wait_ready()
    # Thousands of photos: decoding them takes longer than the 3 s limit on any machine this runs on.
    job_id = stack.jobs.submit({"uri": str(ABID), "limit": 6000}, enqueue=False, epochs=1)
    with stack.jobs.sessions() as s:  # below the API's minimum, to keep the test short
        job = s.get(TrainingJob, job_id)
        assert job is not None
        job.params = {**job.params, "time_limit_seconds": 3}
        s.commit()
    enqueue_training(stack.jobs.celery, stack.settings, job_id, uuid.uuid4().hex, 3)
    job = stack.jobs.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=120)
    assert job.status == "failed", worker.log()
    assert job.error is not None and job.error.startswith("time limit of 3 s exceeded"), job.error
    assert "stopped by Celery's soft time limit" in job.error and job.epoch == 0
    assert "hard time limit" not in worker.log()
    # The prefork child finished the task normally: the worker takes the next job.
    with stack.jobs.sessions() as s:
        assert (
            s.scalar(
                sa.select(sa.func.count()).select_from(TrainingJob).where(TrainingJob.status == "running")
            )
            == 0
        )
    follow_up = stack.jobs.submit(epochs=1)
    assert stack.jobs.wait_status(follow_up, ("succeeded", "failed"), timeout=180).status == "succeeded", (
        worker.log()
    )
