"""Liveness, readiness and Prometheus metrics (no API key: probes and scrapers have none)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from api.deps import NO_MODEL_HELP, AppState, get_state
from api.problems import problem_response, problem_responses
from api.schemas import Alive, ModelRef, Ready
from records.db import DatabaseUnavailable, check_database

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Alive, summary="Liveness")
def healthz() -> Alive:
    """200 whenever the process answers HTTP at all."""
    return Alive()


@router.get(
    "/readyz",
    response_model=Ready,
    summary="Readiness",
    responses=problem_responses(503),
)
async def readyz(state: Annotated[AppState, Depends(get_state)]) -> Ready | JSONResponse:
    """200 when the database answers and a model is loaded; otherwise 503 saying what is missing and
    how to fix it."""
    reasons: list[str] = []
    database = "ok"
    try:
        await run_in_threadpool(check_database, state.engine)
    except DatabaseUnavailable as exc:
        database = str(exc)
        reasons.append(database)
    status = state.models.status()
    model = status.model
    if model is None:
        if status.loading is not None:
            reasons.append(f"model version {status.loading.id} ({status.loading.name}) is loading")
        elif status.error:
            reasons.append(status.error)
        elif not status.checked:
            reasons.append("has not looked for an active model yet")
        else:
            reasons.append(NO_MODEL_HELP)
    if reasons:
        return problem_response(
            None,
            503,
            "not ready: " + "; ".join(reasons),
            title="Not ready",
            database=database,
            model=None,
        )
    assert model is not None
    v = model.version
    return Ready(model=ModelRef(id=v.id, name=v.name, sha256=v.sha256), backend=model.predictor.backend)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
)
def metrics(state: Annotated[AppState, Depends(get_state)]) -> Response:
    """Request counts and latency by route and status, predictions by label, inference batch sizes and
    times, queue depth, the served model. With several uvicorn workers, the sum over all of them,
    whichever worker answers (see docs/api.md)."""
    # A plain def: in aggregated mode rendering reads every worker's files, off the event loop.
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
