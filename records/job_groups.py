"""Who trains a multi-node job together: the group's members and the address they reach each other at.

A training job with ``nodes`` M > 1 (or ``procs_per_node`` > 1) runs as one DDP group of M x P processes
(model/distributed.py). The database is the rendezvous, because every worker already reaches it and
nothing else is shared between hosts:

- The worker that **claims** the job (records/job_leases.py, unchanged: lease, heartbeat, attempts) is node
  0. It opens a new group (a fresh ``group_id`` on the job, so members of an earlier group can never join
  this one), starts the group's store on its own address and records both, then queues one *join*
  message per other node (records/job_queue.py).
- A worker that takes a join message becomes node ``node_rank`` of that group if the job still runs it:
  one row per ``(group_id, node_rank)``, so a redelivered join message cannot seat two workers.
- Node 0 waits until all M rows exist (``BINWATCH_GROUP_FORM_TIMEOUT_SECONDS``); then every node connects
  to node 0's store and the processes form the group. If the group does not form in time, node 0 fails the
  job saying how many joined, and the members, which watch the job while they wait, leave.

Once the group trains, node 0 alone writes: epochs, checkpoints, the model version (as for any job). A
node that dies breaks the group's collectives at once; node 0 then hands the job back to the queue (the
attempt counts) and the next claim opens a new group that resumes from the last stored epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from records.orm import TrainingJob, TrainingJobNode

__all__ = ["JoinOutcome", "Member", "group_rows", "join_group", "members", "open_group", "still_forming"]


@dataclass(frozen=True)
class Member:
    node_rank: int
    host: str
    address: str
    port: int | None


def _member(row: TrainingJobNode) -> Member:
    return Member(row.node_rank, row.host, row.address, row.port)


def open_group(
    session: Session, job_id: str, owner: str, group_id: str, host: str, address: str, port: int
) -> bool:
    """Make ``group_id`` the job's group with node 0 (the job's owner) at ``address:port``; commits.

    False when ``owner`` no longer holds the job (its lease was taken over).
    """
    moved = session.execute(
        sa.update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.host == owner, TrainingJob.status == "running")
        .values(group_id=group_id)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not moved:
        session.rollback()
        return False
    session.add(
        TrainingJobNode(group_id=group_id, node_rank=0, job_id=job_id, host=host, address=address, port=port)
    )
    session.commit()
    return True


class JoinOutcome(StrEnum):
    JOINED = "joined"
    STALE = "stale"  # the job is no longer run by this group (it ended, or a newer group took over)
    TAKEN = "taken"  # another worker already is this node (a redelivered join message)


def join_group(
    session: Session, job_id: str, group_id: str, node_rank: int, host: str, address: str
) -> JoinOutcome:
    """Seat this worker as node ``node_rank`` of the job's group ``group_id`` (commits)."""
    job = session.get(TrainingJob, job_id, populate_existing=True)
    if job is None or job.status != "running" or job.group_id != group_id or not 0 < node_rank < job.nodes:
        session.rollback()
        return JoinOutcome.STALE
    session.add(
        TrainingJobNode(group_id=group_id, node_rank=node_rank, job_id=job_id, host=host, address=address)
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return JoinOutcome.TAKEN
    return JoinOutcome.JOINED


def members(session: Session, group_id: str) -> list[Member]:
    """The group's members so far, by node rank."""
    rows = session.scalars(
        sa.select(TrainingJobNode)
        .where(TrainingJobNode.group_id == group_id)
        .order_by(TrainingJobNode.node_rank)
        .execution_options(populate_existing=True)
    )
    found = [_member(r) for r in rows]
    session.commit()  # end the read: waiting loops call this again and must see new rows
    return found


def still_forming(session: Session, job_id: str, group_id: str) -> bool:
    """True while the job is running and ``group_id`` is its group (a waiting member keeps waiting)."""
    row = session.execute(
        sa.select(TrainingJob.status, TrainingJob.group_id).where(TrainingJob.id == job_id)
    ).one_or_none()
    session.commit()
    return row is not None and row.status == "running" and row.group_id == group_id


def group_rows(session: Session, group_id: str | None) -> list[TrainingJobNode]:
    """The rows of group ``group_id`` by node rank (for display; reads only)."""
    if group_id is None:
        return []
    return list(
        session.scalars(
            sa.select(TrainingJobNode)
            .where(TrainingJobNode.group_id == group_id)
            .order_by(TrainingJobNode.node_rank)
        )
    )
