"""How a job run ends (worker/runner.py), why it stopped early, and the exception for a lost ownership."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # the job had already finished (a redelivered message), or does not exist
    BUSY = "busy"  # another live worker runs it: give the message back to the queue
    REQUEUE = "requeue"  # this worker is shutting down: the job goes back to the queue, resumable
    LOST = "lost"  # another worker took the job over from us: leave it alone
    PRUNED = "pruned"  # a tuning trial that its study's pruner stopped (worker/trials.py)


class StopReason(StrEnum):
    CANCEL = "cancel"
    SHUTDOWN = "shutdown"
    TIME_LIMIT = "time_limit"
    LEASE_LOST = "lease_lost"


class LeaseLost(RuntimeError):
    """Another worker owns the job now (ours was presumed dead); stop without touching the job."""
