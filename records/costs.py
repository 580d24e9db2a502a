"""What a training job used and what it cost: one entry per worker run, priced from the operator's table.

Every run of a job (a job resumed on another host has several) records where it ran (host, instance type,
capacity, device, processes), the wall time of its phases (``load``: reading and decoding the dataset,
``train``: the epochs, ``finish``: evaluation, registration, promotion) and, when the instance type has a
price in ``BINWATCH_INSTANCE_PRICES``, its estimated cost: wall time x the hourly price for its capacity
(on-demand or spot). Estimates, not bills: the price table is the operator's, and a run killed outright
(SIGKILL, a lost host) has nobody left to record it, so its time is missing from the sum.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from records.orm import TrainingJob


def price(prices: dict[str, dict[str, float]], instance_type: str | None, capacity: str) -> float | None:
    """The hourly price for ``instance_type`` bought as ``capacity``; None when the table has none."""
    if instance_type is None:
        return None
    return (prices.get(instance_type) or {}).get(capacity)


def run_entry(
    *,
    host: str,
    instance_type: str | None,
    capacity: str,
    device: str,
    processes: int,
    phases: dict[str, float],
    hourly_usd: float | None,
    outcome: str,
) -> dict[str, Any]:
    wall = round(sum(phases.values()), 2)
    return {
        "host": host,
        "instance_type": instance_type,
        "capacity": capacity,
        "device": device,
        "processes": processes,
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "wall_s": wall,
        "hourly_usd": hourly_usd,
        "cost_usd": None if hourly_usd is None else round(wall / 3600 * hourly_usd, 8),
        "outcome": outcome,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The job's usage: its runs, their total wall time and cost (None if any run has no price)."""
    costs = [r.get("cost_usd") for r in runs]
    return {
        "runs": runs,
        "wall_s": round(sum(float(r.get("wall_s") or 0) for r in runs), 2),
        "cost_usd": round(sum(c for c in costs if c is not None), 8) if runs and None not in costs else None,
        "priced": bool(runs) and None not in costs,
    }


def record_run(session: Session, job_id: str, entry: dict[str, Any]) -> None:
    """Append one run to the job's usage (commits)."""
    job = session.get(TrainingJob, job_id, populate_existing=True, with_for_update=True)
    if job is None:
        return
    runs = list((job.usage or {}).get("runs") or [])
    runs.append(entry)
    session.execute(sa.update(TrainingJob).where(TrainingJob.id == job_id).values(usage=summarise(runs)))
    session.commit()
