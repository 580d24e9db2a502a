"""Multi-node training jobs with real `binwatch worker` processes, Postgres and Redis on this host: two
workers train one job as one DDP group (gloo), a group that cannot form fails and frees the worker that
waited, and one worker runs a job with two processes. The two-host version, with each worker in its own
network namespace and a host killed mid-epoch, is tests/e2e/test_two_hosts.py."""

from __future__ import annotations

import signal

import pytest
import sqlalchemy as sa

from records.orm import ModelVersion, TrainingJobNode
from tests.conftest import ABID
from tests.worker.conftest import Stack
from tests.worker.support import wait_for

pytestmark = pytest.mark.slow

DATA = {"uri": str(ABID), "limit": 96}
DONE = ("succeeded", "failed", "cancelled")


def group_rows(stack: Stack, job_id: str) -> list[TrainingJobNode]:
    with stack.jobs.sessions() as s:
        group_id = s.scalar(sa.text("SELECT group_id FROM training_jobs WHERE id = :id"), {"id": job_id})
        return list(
            s.scalars(
                sa.select(TrainingJobNode)
                .where(TrainingJobNode.group_id == group_id)
                .order_by(TrainingJobNode.node_rank)
            )
        )


def test_two_workers_train_one_job_as_one_group_and_register_one_version(stack: Stack) -> None:
    workers = [stack.worker("a"), stack.worker("b")]
    for w in workers:
        w.wait_ready()
    job_id = stack.jobs.submit(DATA, policy="always", epochs=2, nodes=2)
    job = stack.jobs.wait_status(job_id, DONE, timeout=240)
    assert job.status == "succeeded", f"{job.error}\n{stack.logs()}"
    rows = group_rows(stack, job_id)
    assert [r.node_rank for r in rows] == [0, 1]
    assert rows[0].host != rows[1].host and rows[0].port
    assert [e.epoch for e in stack.jobs.epochs(job_id)] == [1, 2]
    with stack.jobs.sessions() as s:
        versions = s.scalars(sa.select(ModelVersion).where(ModelVersion.training_job_id == job_id)).all()
        assert len(versions) == 1
    # Each node records its own run (node 0 just after the job's end): the bill is two hosts' time.

    def both_runs() -> list[dict[str, object]] | None:
        runs = (stack.jobs.get(job_id).usage or {}).get("runs", [])
        return runs if len(runs) == 2 else None

    runs = wait_for(both_runs, 30, "both nodes' usage")
    assert sorted(r["outcome"] for r in runs) == ["member succeeded", "succeeded"], runs
    logs = stack.logs()
    assert "all 2 nodes joined" in logs and "joined group" in logs


def test_a_group_that_cannot_form_fails_saying_so_and_frees_the_worker_that_waited(stack: Stack) -> None:
    workers = [stack.worker(n, BINWATCH_GROUP_FORM_TIMEOUT_SECONDS="8") for n in ("a", "b")]
    for w in workers:
        w.wait_ready()
    job_id = stack.jobs.submit(DATA, epochs=1, nodes=3)
    job = stack.jobs.wait_status(job_id, DONE, timeout=120)
    assert job.status == "failed"
    assert job.error is not None and "did not form within 8 s" in job.error and "2 of 3 joined" in job.error
    assert "Start more `binwatch worker` processes" in job.error
    # The worker that had joined leaves as soon as the job fails, and both take new work.
    wait_for(lambda: "ended before it formed" in stack.logs(), 30, "the waiting member to leave")
    follow_ups = [stack.jobs.submit(DATA, epochs=1) for _ in range(2)]
    for fid in follow_ups:
        assert stack.jobs.wait_status(fid, DONE, timeout=180).status == "succeeded", stack.logs()


def test_one_worker_trains_a_job_with_two_processes(stack: Stack) -> None:
    stack.worker("a").wait_ready()
    job_id = stack.jobs.submit(DATA, epochs=1, procs_per_node=2)
    job = stack.jobs.wait_status(job_id, DONE, timeout=240)
    assert job.status == "succeeded", f"{job.error}\n{stack.logs()}"
    runs = wait_for(lambda: (stack.jobs.get(job_id).usage or {}).get("runs"), 30, "the run's usage")
    assert runs[0]["processes"] == 2
    assert len(group_rows(stack, job_id)) == 1


def test_losing_node_0_hands_the_job_to_a_new_group_that_resumes_it(stack: Stack) -> None:
    first = stack.worker("a")
    first.wait_ready()
    job_id = stack.jobs.submit({"uri": str(ABID), "limit": 240}, policy="always", epochs=3, nodes=2)
    wait_for(lambda: stack.jobs.get(job_id).group_id, 60, "worker a to open the job's group")
    stack.worker("b").wait_ready()
    wait_for(lambda: stack.jobs.get(job_id).epoch >= 1, 240, "epoch 1 to be stored", interval=0.05)
    first_host = stack.jobs.get(job_id).host
    first.kill()  # node 0, with the job's lease: its heartbeat stops
    first.proc.wait(timeout=10)
    assert stack.jobs.get(job_id).epoch == 1, "the kill must land inside epoch 2"
    # Node 1 leaves its broken group, takes the redelivered job as the new node 0 and waits for a second node.
    wait_for(lambda: "left its group" in stack.logs(), 60, "node 1 to leave the broken group")
    wait_for(lambda: stack.jobs.get(job_id).host != first_host, 60, "worker b to claim the job")
    stack.worker("a-again")
    job = stack.jobs.wait_status(job_id, DONE, timeout=300)
    assert job.status == "succeeded", f"{job.error}\n{stack.logs()}"
    assert job.attempts == 2
    epochs = stack.jobs.epochs(job_id)
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert [e.metrics["resumed_after_epoch"] for e in epochs] == [0, 1, 1]
    with stack.jobs.sessions() as s:
        versions = s.scalars(sa.select(ModelVersion).where(ModelVersion.training_job_id == job_id)).all()
        assert len(versions) == 1


def test_a_member_worker_asked_to_stop_hands_the_job_back_without_using_an_attempt(stack: Stack) -> None:
    """SIGTERM on a member (what a spot interruption notice makes a worker do): the group stops together."""
    stack.worker("a").wait_ready()
    job_id = stack.jobs.submit({"uri": str(ABID), "limit": 240}, policy="always", epochs=3, nodes=2)
    wait_for(lambda: stack.jobs.get(job_id).group_id, 60, "worker a to open the job's group")
    member = stack.worker("b")
    member.wait_ready()
    wait_for(lambda: stack.jobs.get(job_id).epoch >= 1, 240, "epoch 1 to be stored", interval=0.05)
    first_group = stack.jobs.get(job_id).group_id
    member.kill(signal.SIGTERM)
    assert member.proc.wait(timeout=60) == 0, member.log()
    handed_back = "another node of its group is shutting down"
    wait_for(lambda: handed_back in stack.logs(), 30, "node 0 to hand the job back")
    wait_for(lambda: stack.jobs.get(job_id).group_id != first_group, 60, "a new group for the job")
    stack.worker("c")
    job = stack.jobs.wait_status(job_id, DONE, timeout=300)
    assert job.status == "succeeded", f"{job.error}\n{stack.logs()}"
    assert job.attempts == 1, "a clean hand-back is not a used attempt"
    assert [e.epoch for e in stack.jobs.epochs(job_id)] == [1, 2, 3]
