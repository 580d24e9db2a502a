"""Data-parallel training across processes and hosts with torch's own engine (``torch.distributed`` DDP,
launched by ``torch.distributed.run``, i.e. torchrun): gloo on the CPU, NCCL on GPUs.

The rules ``model.training.train`` follows when it runs in such a group (torchrun sets ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` in every process it starts):

- **Batch size and learning rate.** ``batch_size`` is the *effective* (global) batch: each of the N
  processes takes ``batch_size / N`` photos per step (it must divide), and DDP averages their gradients, so
  one step sees the same number of photos as a single-process step and the learning rate and schedule
  stay as they are. A run on N processes is the same optimisation problem as on one, not a larger batch.
- **Sampling.** A ``DistributedSampler`` (shuffled with the run's seed, reshuffled every epoch) gives each
  process a disjoint share of the training bins; it **pads** by repeating a few bins so every process has
  the same number (at most N - 1 repeats per epoch), which keeps the processes in step.
- **Rank 0 writes**: checkpoints, metrics, plots and the progress bar. It also evaluates, on the whole
  validation split, in one process, so the figures are exactly those of a single-process evaluation of
  the same checkpoint. The other processes wait at a barrier.
- **Resume**: rank 0 reads ``last.pt`` and sends its state (weights, optimiser, schedule, history) to the
  others, so only rank 0 needs the output folder (on several hosts it need not be shared).
- **Stopping.** Any process may ask to stop (rank 0 for the job: cancel, time limit; another when its own
  host is going away) and every process sees the sum, so all stop at the same step. Early stopping is
  decided by rank 0 and broadcast.

Two ways into a group: torchrun's environment (``join``, for ``binwatch train --nproc-per-node``), or an
explicit address, rank and size (``start_store`` + ``form``), which the workers use for multi-node training
*jobs*: they agree on rank 0's store address through the database (records/job_groups.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    """This process's place in the group (a one-process run is a group of one)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1 or self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def per_process_batch(self, batch_size: int) -> int:
        if batch_size % self.world_size:
            raise ValueError(
                f"batch_size {batch_size} is the effective batch over {self.world_size} processes and must be"
                f" a multiple of it (each process takes batch_size / {self.world_size}); use e.g. "
                f"{(batch_size // self.world_size or 1) * self.world_size}"
            )
        return batch_size // self.world_size

    def barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (any picklable object)."""
        if not dist.is_initialized():
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, *values: float) -> list[float]:
        """Each value summed over all processes."""
        if not dist.is_initialized():
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return [float(v) for v in t.cpu()]


def launched() -> bool:
    """True inside a process that torchrun started (``WORLD_SIZE`` set)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def join(device: torch.device) -> Group:
    """Join the process group torchrun set up (NCCL on a CUDA device, gloo on the CPU); a group of one
    outside torchrun. Idempotent."""
    if not launched():
        return Group()
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return Group(world, rank, local, backend)


def start_store(address: str, timeout_s: float) -> dist.TCPStore:
    """Rank 0's rendezvous store, listening on ``address`` at a port the OS picks (``store.port``)."""
    return dist.TCPStore(
        address, 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=timeout_s)
    )


def form(
    *,
    address: str,
    port: int,
    world_size: int,
    rank: int,
    local_rank: int,
    device: torch.device,
    timeout_s: float,
    store: dist.TCPStore | None = None,
) -> Group:
    """Join the group whose store rank 0 runs at ``address:port`` (rank 0 passes its own ``store``).

    ``device``: this process's own (``cuda:i`` on a GPU host; train with the same device, since DDP wraps
    the model on it). Blocks until all ``world_size`` processes joined, or raises after ``timeout_s``; the
    same timeout then
    bounds every collective operation, so a process that vanishes without closing its connections (a host
    powered off) stops the others after at most that long.
    """
    timeout = timedelta(seconds=timeout_s)
    if store is None:
        store = dist.TCPStore(address, port, is_master=False, timeout=timeout)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device.index if device.index is not None else local_rank)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    return Group(world_size, rank, local_rank, backend)


def is_group_lost(exc: BaseException) -> bool:
    """True for the error a collective raises when another process of the group died or hung."""
    if isinstance(exc, dist.DistError):
        return True
    marks = ("gloo", "Gloo", "NCCL", "Connection reset", "Connection closed", "timed out")
    return isinstance(exc, RuntimeError) and any(mark in str(exc) for mark in marks)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(name: str) -> torch.device:
    """The device this process trains on: its own GPU (``cuda:LOCAL_RANK``) under torchrun on a GPU host."""
    from model.training import resolve_device

    device = resolve_device(name)
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device
