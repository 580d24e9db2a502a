"""The API side of multi-node training jobs: what a submission may ask for, and the group shown on a job.

A job with ``nodes`` M and ``procs_per_node`` P trains as one DDP group of M x P processes on M worker
hosts (worker/groups.py). ``batch_size`` stays the effective batch of one optimisation step, split over
the M x P processes (model/distributed.py), so it must be a multiple of M x P; that is checked here, where
the client can still fix it, rather than on the workers after the group formed.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from records.orm import TrainingJobNode
from settings import Settings


class GroupMemberOut(BaseModel):
    node_rank: int = Field(description="0 is the worker that claimed the job and writes its results.")
    host: str = Field(description="The worker run seated at this node.")
    address: str = Field(description="The address it published to the other nodes.")
    joined_at: datetime


def group_problem(
    nodes: int, procs_per_node: int, batch_size: int, settings: Settings
) -> tuple[str, str] | None:
    """(message, field at fault) when a submission's group cannot run on this deployment, else None."""
    if nodes > settings.max_nodes:
        return (
            f"nodes {nodes} is above this deployment's limit of {settings.max_nodes} (BINWATCH_MAX_NODES)",
            "nodes",
        )
    most = settings.max_procs_per_node
    if procs_per_node > most:
        return (
            f"procs_per_node {procs_per_node} is above this deployment's limit of {most} "
            "(BINWATCH_MAX_PROCS_PER_NODE)",
            "procs_per_node",
        )
    world = nodes * procs_per_node
    if batch_size % world:
        fit = max(world, batch_size // world * world)
        return (
            f"batch_size {batch_size} is the effective batch over nodes x procs_per_node = {world} processes "
            f"and must be a multiple of {world} (each process takes batch_size / {world}); use e.g. {fit}",
            "hyperparameters",
        )
    return None


def group_out(rows: list[TrainingJobNode]) -> list[GroupMemberOut]:
    return [
        GroupMemberOut(node_rank=r.node_rank, host=r.host, address=r.address, joined_at=r.joined_at)
        for r in rows
    ]
