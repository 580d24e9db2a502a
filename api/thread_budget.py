"""How many threads each kind of work gets, decided once per process at start.

An API process runs three kinds of CPU work at once: the forward pass (torch's intra-op threads, on the
inference thread), decoding and preprocessing photos (a dedicated pool), and the event loop. Left alone,
torch takes one thread per core in *every* uvicorn worker and every request decodes on its own threadpool
thread, so N workers on C cores run N x C torch threads plus the decoders: the forward pass then runs at
half speed and `BINWATCH_WORKERS=2` measured 2-3x slower than one worker on 2 cores (docs/performance.md).

The budget: the cores this process may use are the cores the host gives it (CPU affinity and cgroup
quota, or BINWATCH_CPU_CORES) divided by the uvicorn workers; torch gets all of them and decoding gets a
quarter (at least one thread), because decoding is about a quarter of the CPU time of a served photo and
waiting for a decoder is cheaper than a forward pass that shares its cores. Each part can be overridden
(BINWATCH_TORCH_THREADS, BINWATCH_DECODE_THREADS). The choice is logged at start and exported in /metrics
(``binwatch_threads``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from settings import Settings

log = logging.getLogger("binwatch.api.threads")


@dataclass(frozen=True)
class ThreadBudget:
    host_cores: int
    workers: int
    cores: int  # this process's share
    torch_threads: int
    decode_threads: int

    def describe(self) -> str:
        return (
            f"{self.host_cores} cores / {self.workers} worker{'s' if self.workers != 1 else ''}: "
            f"{self.torch_threads} torch thread{'s' if self.torch_threads != 1 else ''} and "
            f"{self.decode_threads} decode thread{'s' if self.decode_threads != 1 else ''} per worker"
        )


def _cgroup_cores() -> float | None:
    """The cgroup v2 CPU quota in cores (containers with --cpus), None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cores()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def plan(settings: Settings) -> ThreadBudget:
    host = settings.cpu_cores or available_cores()
    workers = max(1, settings.workers)
    share = max(1, host // workers)
    torch_threads = settings.torch_threads or share
    decode_threads = settings.decode_threads or max(1, share // 4)
    return ThreadBudget(host, workers, share, torch_threads, decode_threads)


def apply(budget: ThreadBudget) -> None:
    """Set torch's thread counts for this process (call once, before the first forward pass)."""
    import torch

    torch.set_num_threads(budget.torch_threads)
    try:
        # One inference thread runs one forward pass at a time: inter-op parallelism only adds threads.
        torch.set_num_interop_threads(1)
    except RuntimeError:
        # Already set, or parallel work already ran in this process (tests build many apps): keep it.
        pass
    log.info("thread budget: %s", budget.describe())
