"""Every job records where it ran, its phases' wall time and its estimated cost (records/costs.py), through
a real worker process priced by the operator's table; and `binwatch jobs cost`'s totals."""

from __future__ import annotations

import json

import pytest

from binwatch.cli.cost import summarise, usage_lines
from tests.conftest import ABID
from tests.worker.conftest import Stack
from tests.worker.support import wait_for

pytestmark = pytest.mark.slow

PRICES = json.dumps({"g5.xlarge": {"on-demand": 1.006, "spot": 0.4}})


def test_a_job_records_its_runs_phases_and_cost_at_the_configured_spot_price(stack: Stack) -> None:
    worker = stack.worker(
        BINWATCH_INSTANCE_TYPE="g5.xlarge", BINWATCH_CAPACITY="spot", BINWATCH_INSTANCE_PRICES=PRICES
    )
    worker.wait_ready()
    job_id = stack.jobs.submit({"uri": str(ABID), "limit": 64}, epochs=1)
    job = stack.jobs.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=180)
    assert job.status == "succeeded", stack.logs()
    # Written as the run ends, just after the job's final state.
    job = wait_for(lambda: j if (j := stack.jobs.get(job_id)).usage else None, 10, "the job's usage")
    usage = job.usage
    assert usage is not None and len(usage["runs"]) == 1, usage
    run = usage["runs"][0]
    assert run["instance_type"] == "g5.xlarge" and run["capacity"] == "spot" and run["hourly_usd"] == 0.4
    assert run["device"].startswith("cpu (") and run["processes"] == 1 and run["outcome"] == "succeeded"
    assert set(run["phases_s"]) == {"load", "train", "finish"} and all(
        v > 0 for v in run["phases_s"].values()
    )
    assert run["wall_s"] == pytest.approx(sum(run["phases_s"].values()), abs=0.05)
    # The run's wall time is about the job's own running time.
    running = (job.finished_at - job.started_at).total_seconds()
    assert 0.5 * running <= run["wall_s"] <= running + 1.0, (run["wall_s"], running)
    assert run["cost_usd"] == pytest.approx(run["wall_s"] / 3600 * 0.4, abs=1e-7)
    assert usage["cost_usd"] == pytest.approx(run["cost_usd"]) and usage["priced"] is True
    # What `binwatch jobs show` and `binwatch jobs cost` make of it.
    shown = dict(usage_lines({"usage": usage}))
    assert "g5.xlarge (spot)" in shown["run 1"] and "at $0.4/h" in shown["run 1"]
    api_like = {
        "usage": usage,
        "model_version_id": job.model_version_id,
        "created_at": job.created_at.isoformat(),
    }
    unpriced = {
        "usage": {"runs": [], "wall_s": 7200.0, "cost_usd": None},
        "model_version_id": None,
        "created_at": "2026-10-01T00:00:00+00:00",
    }
    totals = summarise([api_like, unpriced])
    month = job.created_at.isoformat()[:7]
    assert totals["by_month"][month]["cost_usd"] == pytest.approx(usage["cost_usd"])
    assert totals["by_month"]["2026-10"] == {"jobs": 1, "hours": 2.0, "cost_usd": 0.0, "unpriced": 1}
    assert totals["by_model_version"][str(job.model_version_id or "none")]["jobs"] == 1


def test_a_type_without_a_price_records_its_usage_but_no_cost(stack: Stack) -> None:
    worker = stack.worker(BINWATCH_INSTANCE_TYPE="m7i.large", BINWATCH_INSTANCE_PRICES=PRICES)
    worker.wait_ready()
    job_id = stack.jobs.submit({"uri": str(ABID), "limit": 64}, epochs=1, max_train_batches=1)
    job = stack.jobs.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=180)
    assert job.status == "succeeded", stack.logs()
    job = wait_for(lambda: j if (j := stack.jobs.get(job_id)).usage else None, 10, "the job's usage")
    run = job.usage["runs"][0]
    assert run["instance_type"] == "m7i.large" and run["hourly_usd"] is None and run["cost_usd"] is None
    assert job.usage["cost_usd"] is None and job.usage["priced"] is False and job.usage["wall_s"] > 0
