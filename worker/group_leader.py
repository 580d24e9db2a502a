"""Node 0 of a multi-node training job: the worker that claimed it forms its group (worker/groups.py has
the whole protocol; records/job_groups.py the rows it uses).

``GroupLeading`` is a part of ``worker.runner.JobRun`` (a mixin).
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from model.config import TrainConfig
from model.distributed import Group, form, leave, start_store
from model.training import TrainingCancelled, resolve_device
from records import job_groups
from records.job_queue import QueueUnavailable, enqueue_join
from records.orm import TrainingJob
from settings import Settings
from worker.groups import (
    POLL_S,
    GroupNotFormed,
    bind_interface,
    node_address,
    start_local_ranks,
    stop_local_ranks,
)
from worker.outcomes import LeaseLost
from worker.producer import producer

if TYPE_CHECKING:  # pragma: no cover
    from worker.runner import Resources

log = logging.getLogger("worker.groups")


class GroupLeading:
    """Node 0's side, a part of ``worker.runner.JobRun`` (a mixin)."""

    job_id: str
    owner: str
    settings: Settings
    res: Resources
    group: Group | None
    local_ranks: list[BaseProcess]
    # Methods of JobRun, which this class is a part of (declared for the type checker only).
    session: Callable[[], Session]
    should_stop: Callable[[], bool]

    def _lead_group(self, job: TrainingJob, cfg: TrainConfig) -> Group | None:
        """Form the job's group as its rank 0 (None for a one-process job); raises GroupNotFormed."""
        world = job.nodes * job.procs_per_node
        if world == 1:
            return None
        timeout = self.settings.group_form_timeout_seconds
        address = node_address(self.settings)
        bind_interface(address)
        store = start_store(address, self.settings.group_timeout_seconds)
        group_id = uuid.uuid4().hex
        with self.session() as session:
            if not job_groups.open_group(
                session, job.id, self.owner, group_id, socket.gethostname(), address, store.port
            ):
                raise LeaseLost(job.id)
        log.info(
            "job %s: group %s of %d node(s) x %d process(es) opened at %s:%d",
            job.id,
            group_id[:8],
            job.nodes,
            job.procs_per_node,
            address,
            store.port,
        )
        soft = (job.params or {}).get("time_limit_seconds")
        try:
            for node_rank in range(1, job.nodes):
                enqueue_join(producer(self.settings), self.settings, job.id, group_id, node_rank, soft)
        except QueueUnavailable as exc:
            raise GroupNotFormed(f"the other nodes could not be asked to join: {exc}") from exc
        self._wait_for_members(job, group_id, timeout)
        self.local_ranks = start_local_ranks(job, 0, address, store.port, self.settings)
        return form(
            address=address,
            port=store.port,
            world_size=world,
            rank=0,
            local_rank=0,
            device=resolve_device(cfg.device),
            timeout_s=self.settings.group_timeout_seconds,
            store=store,
        )

    def _wait_for_members(self, job: TrainingJob, group_id: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            with self.session() as session:
                seated = job_groups.members(session, group_id)
            if len(seated) == job.nodes:
                log.info(
                    "job %s: all %d nodes joined (%s)",
                    job.id,
                    job.nodes,
                    ", ".join(f"{m.node_rank}: {m.host} {m.address}" for m in seated),
                )
                return
            if self.should_stop():
                raise TrainingCancelled("stopped while its group was forming")
            if time.monotonic() > deadline:
                hosts = ", ".join(f"node {m.node_rank} on {m.host}" for m in seated)
                raise GroupNotFormed(
                    f"the group of {job.nodes} nodes did not form within {timeout_s:g} s "
                    f"(BINWATCH_GROUP_FORM_TIMEOUT_SECONDS): {len(seated)} of {job.nodes} joined ({hosts}). "
                    "Start more `binwatch worker` processes on the training queue, or submit with fewer nodes"
                )
            time.sleep(POLL_S)

    def _leave_group(self) -> None:
        if self.group is not None:
            leave()
        stop_local_ranks(self.local_ranks)
        self.local_ranks = []
