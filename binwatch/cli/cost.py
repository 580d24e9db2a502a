"""`binwatch jobs cost`: what training jobs cost, by model version and by month, from the API's job usage
(records/costs.py says what is measured and how it is priced; docs/cost.md)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.table import Table

from binwatch.cli.api_client import DEFAULT_URL, Api, ApiKey, AsJson, Url

console = Console(highlight=False)


def usage_lines(job: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for `binwatch jobs show`: each run's place and phases, and the job's estimated cost."""
    usage = job.get("usage") or {}
    rows = []
    for i, run in enumerate(usage.get("runs") or [], 1):
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in (run.get("phases_s") or {}).items())
        price = "no price"
        if run.get("cost_usd") is not None:
            price = f"${run['cost_usd']:.4f} at ${run['hourly_usd']}/h"
        rows.append(
            (
                f"run {i}",
                f"{run.get('instance_type') or 'unknown type'} ({run.get('capacity')}), {run.get('device')}, "
                f"{run.get('processes')} process(es): {phases}; {price}; {run.get('outcome')}",
            )
        )
    if usage:
        cost = usage.get("cost_usd")
        rows.append(("cost", "-" if cost is None else f"${cost:.4f} ({usage.get('wall_s', 0):.0f} s)"))
    return rows


def _all_jobs(api: Api) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if before:
            params["before"] = before
        page = api.request("GET", "/v1/training-jobs", params=params)
        items += page["items"]
        before = page.get("next_cursor")
        if not before:
            return items


def summarise(jobs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Totals by model version and by month (UTC, of the job's creation): jobs, wall hours, cost, and how
    many jobs had no price (their cost is not in the total)."""
    out: dict[str, dict[str, dict[str, float]]] = {
        "by_model_version": defaultdict(dict),
        "by_month": defaultdict(dict),
    }
    for job in jobs:
        usage = job.get("usage") or {}
        keys = {
            "by_model_version": str(job.get("model_version_id") or "none"),
            "by_month": str(job["created_at"])[:7],
        }
        for group, key in keys.items():
            row = out[group][key] or {"jobs": 0, "hours": 0.0, "cost_usd": 0.0, "unpriced": 0}
            row["jobs"] += 1
            row["hours"] += float(usage.get("wall_s") or 0) / 3600
            if usage.get("cost_usd") is None:
                row["unpriced"] += 1
            else:
                row["cost_usd"] += float(usage["cost_usd"])
            out[group][key] = row
    return {g: dict(sorted(v.items())) for g, v in out.items()}


def cost(url: Url = DEFAULT_URL, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Estimated training cost by model version and by month (docs/cost.md)."""
    totals = summarise(_all_jobs(Api(url, api_key)))
    if as_json:
        sys.stdout.write(json.dumps(totals) + "\n")
        return
    for group, title in (("by_model_version", "model version"), ("by_month", "month")):
        table = Table(title=f"training cost by {title}")
        for col in (title, "jobs", "hours", "cost (USD)", "jobs without a price"):
            table.add_column(col)
        for key, row in totals[group].items():
            hours, usd = f"{row['hours']:.3f}", f"{row['cost_usd']:.4f}"
            table.add_row(key, str(row["jobs"]), hours, usd, str(row["unpriced"]))
        console.print(table)
