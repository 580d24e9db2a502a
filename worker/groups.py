"""Multi-node training jobs on the workers: node 0 leads the group, the others join it (records/job_groups.py
says how they find each other through the database; model/distributed.py how the group trains).

- **Node 0** is the worker that claimed the job (``GroupLeading`` in worker/group_leader.py, a part of
  ``worker.runner.JobRun``). It starts the group's store on its own address, publishes it, queues one
  join message per other node and waits for them. Then it starts its extra local processes
  (``procs_per_node`` > 1) and trains as rank 0: the job's epochs, checkpoints and model version are
  written exactly as for a one-process job.
- **Other nodes** (``run_member``, the join task) train as ranks ``node_rank x procs_per_node + i`` and
  write nothing but their own usage entry.
- **Faults.** The group cannot form in ``BINWATCH_GROUP_FORM_TIMEOUT_SECONDS``: the job fails saying how
  many joined, and waiting members leave. A process of a formed group dies: the others' collectives fail
  at once; node 0 hands the job back to the queue with the attempt counted, and the next claim forms a new
  group that resumes after the last stored epoch. Node 0 itself dies: its lease goes stale and the reaper
  queues the job again (worker/reaper.py). A member's worker shutting down (SIGTERM, a spot notice) stops
  the whole group at the same step, and the job goes back to the queue without using an attempt.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from model.config import TrainConfig
from model.distributed import form, leave
from model.training import TrainHooks, TrainingCancelled, resolve_device, train
from records import costs, job_groups
from records.job_spec import DatasetSpec
from records.orm import TrainingJob
from settings import Settings, get_settings
from worker.instance_metadata import instance_type
from worker.job_data import JobData, load_job_data
from worker.outcomes import Outcome

if TYPE_CHECKING:  # pragma: no cover
    from worker.runner import Resources

log = logging.getLogger(__name__)

POLL_S = 0.5


class GroupNotFormed(ValueError):
    """Not enough workers joined the job's group in time (the message says how many did)."""


def node_address(settings: Settings) -> str:
    """The address this host publishes to the other nodes (``BINWATCH_NODE_ADDRESS``, or detected)."""
    if settings.node_address:
        return settings.node_address
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite" or not url.host:
        return "127.0.0.1"
    try:
        # The source address of the route to the database server: the interface other hosts that reach
        # the same database most likely reach this one on. A UDP connect sends nothing.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((url.host, url.port or 5432))
            return str(probe.getsockname()[0])
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def bind_interface(address: str) -> None:
    """Make gloo and NCCL use the interface that holds ``address``, unless the operator chose one.

    By default they pick the address this host's *name* resolves to, which on a multi-homed host (or in a
    container or network namespace) may not be the one the other nodes reach: they would wait forever.
    Set in the environment so that this node's extra processes (spawned) inherit it.
    """
    name = _interface_of(address)
    if name is None:
        log.warning("no network interface holds %s; gloo and NCCL choose their own", address)
        return
    for var in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        os.environ.setdefault(var, name)


def _interface_of(address: str) -> str | None:
    import fcntl
    import struct

    siocgifaddr = 0x8915  # Linux: an interface's IPv4 address
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                packed = fcntl.ioctl(probe.fileno(), siocgifaddr, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue  # no IPv4 address on it
        if socket.inet_ntoa(packed[20:24]) == address:
            return name
    return None


def rank_device(settings: Settings, local_rank: int) -> str:
    """The device a group process trains on: its own GPU on a GPU host, else the CPU."""
    return f"cuda:{local_rank}" if resolve_device(settings.device).type == "cuda" else "cpu"


@dataclass(frozen=True)
class Seat:
    """One process's place in a job's group."""

    job_id: str
    address: str
    port: int
    world_size: int
    rank: int
    local_rank: int
    timeout_s: float


def train_in_seat(
    seat: Seat, config: dict[str, Any], data: JobData, settings: Settings, should_stop: Callable[[], bool]
) -> None:
    """Train as a process other than rank 0: nothing is written that outlives the call."""
    cfg = TrainConfig.model_validate({**config, "device": rank_device(settings, seat.local_rank)})
    group = form(
        address=seat.address,
        port=seat.port,
        world_size=seat.world_size,
        rank=seat.rank,
        local_rank=seat.local_rank,
        device=resolve_device(cfg.device),
        timeout_s=seat.timeout_s,
    )
    try:
        with tempfile.TemporaryDirectory(
            prefix=f"rank{seat.rank}-", dir=settings.resolved_job_work_dir
        ) as out:
            hooks = TrainHooks(should_stop=should_stop, stop_check_every=1)  # the same checks as rank 0's
            train(
                cfg, data.source, data.train, data.val, out, hooks, resume=False, progress=False, group=group
            )
    finally:
        leave()


def _local_rank_main(seat: Seat, dataset: dict[str, Any], config: dict[str, Any]) -> None:
    """A node's extra process (``procs_per_node`` > 1), started with spawn: same environment, own rank."""
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format=f"%(asctime)s rank {seat.rank} %(levelname)s %(message)s"
    )
    settings.resolved_job_work_dir.mkdir(parents=True, exist_ok=True)
    data = load_job_data(DatasetSpec.model_validate(dataset), settings)
    try:
        train_in_seat(seat, config, data, settings, should_stop=lambda: False)
    except TrainingCancelled:
        pass  # the group stopped together (cancel, shutdown): rank 0 records why


def start_local_ranks(
    job: TrainingJob, node_rank: int, address: str, port: int, settings: Settings
) -> list[BaseProcess]:
    """Start this node's processes 1..procs_per_node-1; each loads the data and joins the group itself."""
    if job.procs_per_node == 1:
        return []
    if multiprocessing.current_process().daemon:
        raise ValueError(
            f"procs_per_node {job.procs_per_node} needs a worker that may start processes: Celery's prefork "
            "children may not; run the worker with BINWATCH_WORKER_POOL=solo"
        )
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA or threads
    procs: list[BaseProcess] = []
    world = job.nodes * job.procs_per_node
    for local in range(1, job.procs_per_node):
        seat = Seat(
            job.id,
            address,
            port,
            world,
            node_rank * job.procs_per_node + local,
            local,
            settings.group_timeout_seconds,
        )
        proc = ctx.Process(
            target=_local_rank_main, args=(seat, dict(job.dataset), dict(job.params["config"]))
        )
        proc.start()
        procs.append(proc)
    return procs


def stop_local_ranks(procs: list[BaseProcess], wait_s: float = 30.0) -> None:
    """Wait for this node's extra processes (they end with the group) and kill any left over."""
    deadline = time.monotonic() + wait_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(5)


# --------------------------------------------------------------------------------------------- the others


def run_member(
    job_id: str,
    group_id: str,
    node_rank: int,
    res: Resources,
    shutdown_requested: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Join the job's group ``group_id`` as node ``node_rank`` and train until the group ends."""
    from worker.runner import owner_token

    settings = res.settings
    owner = owner_token()
    address = node_address(settings)
    bind_interface(address)
    with res.sessions() as session:
        joined = job_groups.join_group(session, job_id, group_id, node_rank, owner, address)
        job = session.get(TrainingJob, job_id)
        detail = (
            (dict(job.dataset), dict(job.params["config"]), job.nodes, job.procs_per_node) if job else None
        )
    if joined != job_groups.JoinOutcome.JOINED or detail is None:
        log.info("job %s: node %d of group %s not joined (%s)", job_id, node_rank, group_id[:8], joined)
        return Outcome.SKIPPED
    dataset, config, nodes, procs = detail
    log.info("job %s: joined group %s as node %d from %s", job_id, group_id[:8], node_rank, address)
    started, phases = time.monotonic(), {}
    outcome = Outcome.FAILED
    local: list[BaseProcess] = []
    try:
        settings.resolved_job_work_dir.mkdir(parents=True, exist_ok=True)
        data = load_job_data(DatasetSpec.model_validate(dataset), settings)
        phases["load"] = time.monotonic() - started
        leader = _wait_until_seated(res, job_id, group_id, nodes, settings.group_form_timeout_seconds * 2)
        if leader is None:
            log.info(
                "job %s: group %s ended before it formed; node %d leaves", job_id, group_id[:8], node_rank
            )
            outcome = Outcome.SKIPPED
            return outcome
        # ``job`` was read (whole) when this node joined; detached since, its columns are still loaded.
        local = start_local_ranks(job, node_rank, leader.address, int(leader.port or 0), settings)
        seat = Seat(
            job_id,
            leader.address,
            int(leader.port or 0),
            nodes * procs,
            node_rank * procs,
            0,
            settings.group_timeout_seconds,
        )
        train_in_seat(seat, config, data, settings, should_stop=shutdown_requested)
        outcome = Outcome.SUCCEEDED
    except TrainingCancelled:
        outcome = Outcome.CANCELLED  # the group stopped together; node 0 records why
    except Exception as exc:  # noqa: BLE001 - node 0 decides what happens to the job
        log.warning("job %s: node %d left its group: %s", job_id, node_rank, exc)
    finally:
        stop_local_ranks(local)
        phases["train"] = time.monotonic() - started - phases.get("load", 0.0)
        _record_member_usage(res, job_id, owner, procs, phases, outcome)
    log.info("job %s: node %d done (%s)", job_id, node_rank, outcome.value)
    return outcome


def _wait_until_seated(
    res: Resources, job_id: str, group_id: str, nodes: int, timeout_s: float
) -> job_groups.Member | None:
    """Node 0's seat once every node joined; None if the job stopped running this group first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with res.sessions() as session:
            if not job_groups.still_forming(session, job_id, group_id):
                return None
            seated = job_groups.members(session, group_id)
        if len(seated) == nodes:
            return seated[0]
        time.sleep(POLL_S)
    return None


def _record_member_usage(
    res: Resources, job_id: str, owner: str, procs: int, phases: dict[str, float], outcome: Outcome
) -> None:
    settings = res.settings
    try:
        kind = instance_type(settings)
        entry = costs.run_entry(
            host=owner,
            instance_type=kind,
            capacity=settings.capacity,
            device=resolve_device(settings.device).type,
            processes=procs,
            phases=phases,
            hourly_usd=costs.price(settings.instance_prices, kind, settings.capacity),
            outcome=f"member {outcome.value}",
        )
        with res.sessions() as session:
            costs.record_run(session, job_id, entry)
    except Exception:  # noqa: BLE001 - the job's result matters more than its bill
        log.warning("job %s: could not record this node's usage", job_id, exc_info=True)
