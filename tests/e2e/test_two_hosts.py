"""A two-host training job: two `binwatch worker` processes, each in its own network namespace with its own
address (tests/e2e/hosts.py), that reach each other only through the address they publish in the database,
train one job as one DDP group over real Postgres and Redis, and survive the loss of a host.

The member host is SIGKILLed (every process in it) inside epoch 2. Node 0's next collective fails at once;
it hands the job back with the attempt counted and, once the killed host's worker is back, a new group
resumes after epoch 1 and finishes: epochs 1, 2, 3 recorded once each, one model version.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from records.migrate import upgrade_database
from records.orm import ModelVersion, TrainingJobNode
from tests.conftest import ABID
from tests.e2e.hosts import Network, two_hosts
from tests.worker.support import (
    Jobs,
    WorkerProcess,
    delete_redis_prefix,
    settings_from_env,
    start_worker,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.slow

# Enough photos that an epoch of two ranks takes a few seconds here: room to kill inside epoch 2.
DATA = {"uri": str(ABID), "limit": 240}
DONE = ("succeeded", "failed", "cancelled")


@pytest.fixture
def network() -> Iterator[Network]:
    with two_hosts(forward_ports=[5432, 6379]) as net:
        yield net


def test_a_job_on_two_hosts_survives_losing_one_and_registers_one_version(
    network: Network, pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    upgrade_database(pg_url)
    prefix = f"bwtest-{uuid.uuid4().hex[:10]}:"
    local_env = worker_env(
        database_url=pg_url,
        broker_url=f"{redis_url}/0",
        home=tmp_path / "home",
        artifacts=tmp_path / "artifacts",  # one folder both "hosts" see, as a shared bucket would be
        key_prefix=prefix,
    )
    jobs = Jobs(settings_from_env(local_env))
    # Inside the namespaces the database and broker are at the bridge's address, forwarded to 127.0.0.1;
    # BINWATCH_NODE_ADDRESS is not set: each worker finds its own address on the route to the database.
    host_env = dict(
        local_env,
        BINWATCH_DATABASE_URL=pg_url.replace("127.0.0.1", network.gateway),
        BINWATCH_BROKER_URL=f"{redis_url.replace('127.0.0.1', network.gateway)}/0",
        BINWATCH_GROUP_FORM_TIMEOUT_SECONDS="120",
        BINWATCH_GROUP_TIMEOUT_SECONDS="60",
    )
    a, b = network.hosts
    workers: list[WorkerProcess] = []

    def start(host_index: int, name: str) -> WorkerProcess:
        host = network.hosts[host_index]
        proc = start_worker(host_env, tmp_path / "logs", name, wrap=host.command)
        workers.append(proc)
        proc.wait_ready()
        return proc

    def logs() -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log()[-5000:]}" for w in workers)

    try:
        start(0, "host-a")  # alone at first, so host a claims the job and is node 0
        job_id = jobs.submit(DATA, policy="always", epochs=3, nodes=2)
        wait_for(lambda: jobs.get(job_id).group_id, 60, "host a to open the job's group")
        worker_b = start(1, "host-b")

        wait_for(lambda: jobs.get(job_id).epoch >= 1, 240, "epoch 1 to be stored", interval=0.05)
        worker_b.kill(signal.SIGKILL)  # host b is gone: every process in it
        worker_b.proc.wait(timeout=10)
        first = jobs.get(job_id)
        assert first.epoch == 1 and first.status in ("running", "queued"), "the kill must land inside epoch 2"
        first_group = first.group_id

        # Node 0 notices at its next collective and hands the job back; a new group waits for a second host.
        wait_for(
            lambda: (j := jobs.get(job_id)).group_id not in (None, first_group) and j.status == "running",
            120,
            "a new group for the job",
        )
        start(1, "host-b-again")
        job = jobs.wait_status(job_id, DONE, timeout=300)
        assert job.status == "succeeded", f"{job.error}\n{logs()}"

        assert job.attempts == 2, "the lost host counts as an attempt"
        epochs = jobs.epochs(job_id)
        assert [e.epoch for e in epochs] == [1, 2, 3]
        assert [e.metrics["resumed_after_epoch"] for e in epochs] == [0, 1, 1], "resumed, not started over"
        with jobs.sessions() as s:
            versions = s.scalars(sa.select(ModelVersion).where(ModelVersion.training_job_id == job_id)).all()
            assert len(versions) == 1
            rows = s.scalars(sa.select(TrainingJobNode).where(TrainingJobNode.job_id == job_id)).all()
        # Two groups of two; each worker published its own namespace's address.
        assert len({r.group_id for r in rows}) == 2 and len(rows) == 4
        last = sorted((r for r in rows if r.group_id == job.group_id), key=lambda r: r.node_rank)
        assert [r.address for r in last] == [a.address, b.address]
        assert "its group lost a process" in logs()
    finally:
        for w in workers:
            w.stop(timeout=15)
        jobs.close()
        delete_redis_prefix(redis_url, prefix)
