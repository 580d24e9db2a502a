"""The overview page: bins by last verdict, checks per day, the serving model, jobs in flight."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api.console.charts import bar_chart
from api.console.render import page
from api.console.session import SignedIn, State, Viewer
from api.deps import AppState
from records import jobs as job_records
from records import reviews, tuning_jobs
from records.db import session_scope
from records.orm import ModelVersion

router = APIRouter(include_in_schema=False)

ACTIVE_JOB_STATUSES = ("queued", "running")


def _figures(state: AppState, viewer: Viewer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with session_scope(state.session_factory) as session:
        if viewer.can("inventory"):
            figures = reviews.overview(session)
            out["inventory"] = figures
            out["per_day_chart"] = bar_chart(figures.checks_per_day, "Checks per day, last 14 days (UTC)")
        current = state.models.current
        if current is not None:
            version = session.get(ModelVersion, current.version_id)
            out["model"] = version
            out["model_metrics"] = dict(version.metrics or {}) if version else {}
        if viewer.can("train"):
            out["jobs"] = job_records.list_jobs(
                session, status=ACTIVE_JOB_STATUSES, limit=20, trials=False
            ).items
            out["latest"] = job_records.latest_epochs(session, [j.id for j in out["jobs"]])
            out["studies"] = tuning_jobs.list_tuning_jobs(session, status=ACTIVE_JOB_STATUSES, limit=20).items
        session.expunge_all()
    return out


@router.get("/")
async def overview(request: Request, viewer: SignedIn, state: State) -> Response:
    figures = await run_in_threadpool(_figures, state, viewer)
    return page(request, "overview.html", viewer, **figures)
