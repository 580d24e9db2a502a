"""Jobs: training and tuning jobs with their state, live per-epoch curves, cost, cancel, and a submit form.

Submitting and cancelling call the API's own handlers (api/routes/training_jobs.py, tuning_jobs.py), so
the same validation, deployment limits and queue errors apply; their problems are shown on the page.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api.console.charts import epoch_curves
from api.console.render import page
from api.console.session import State, Viewer, checked_form, require, whole_number
from api.deps import AppState
from api.problems import Problem
from api.routes.training_jobs import cancel_training_job, submit_job
from api.routes.tuning_jobs import cancel_tuning, get_tuning_picture
from api.training_job_schemas import TrainingJobCreate, job_out
from api.tuning_job_schemas import tuning_out
from model.recipes import DEFAULT_RECIPE, RECIPES
from records import jobs as job_records
from records import tuning_jobs
from records.db import session_scope
from records.orm import JOB_FINISHED_STATUSES

router = APIRouter(include_in_schema=False)

Trainer = Annotated[Viewer, Depends(require("train"))]
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


def _lists(state: AppState) -> dict[str, Any]:
    with session_scope(state.session_factory) as session:
        rows = job_records.list_jobs(session, limit=50, trials=False).items
        latest = job_records.latest_epochs(session, [j.id for j in rows])
        studies = tuning_jobs.list_tuning_jobs(session, limit=20).items
        return {"jobs": [job_out(j, latest=latest.get(j.id)) for j in rows], "studies": studies}


def _form_defaults(settings: Any) -> dict[str, Any]:
    roots = list(settings.dataset_roots or [])
    return {
        "recipes": sorted(RECIPES),
        "default_recipe": DEFAULT_RECIPE,
        "default_uri": roots[0] if roots else "",
        "values": {},
    }


async def _jobs_page(
    request: Request, viewer: Viewer, state: AppState, status_code: int = 200, **extra: Any
) -> Response:
    lists = await run_in_threadpool(_lists, state)
    context = {**_form_defaults(state.settings), **lists, **extra}
    return page(request, "jobs.html", viewer, status_code, **context)


@router.get("/jobs")
async def jobs(request: Request, viewer: Trainer, state: State) -> Response:
    return await _jobs_page(request, viewer, state)


def _body(form: Any) -> dict[str, Any]:
    def text(name: str) -> str:
        return str(form.get(name) or "").strip()

    def number(name: str) -> int | str:
        # A whole number as an int; anything else as the text, for the strict model to refuse by name.
        value = text(name)
        number = whole_number(value)
        return value if number is None else number

    dataset: dict[str, Any] = {}
    if text("uri"):
        dataset["uri"] = text("uri")
    if text("limit"):
        dataset["limit"] = number("limit")
    if form.get("reviews") == "on":
        dataset["reviews"] = {}
    hyper: dict[str, Any] = {"recipe": text("recipe") or DEFAULT_RECIPE}
    if text("epochs"):
        hyper["epochs"] = number("epochs")
    body: dict[str, Any] = {
        "dataset": dataset,
        "hyperparameters": hyper,
        "promotion_policy": text("promotion_policy") or "if_better",
    }
    if text("model_name"):
        body["model_name"] = text("model_name")
    return body


def _submit(request: Request, state: AppState, body: TrainingJobCreate, viewer: Viewer) -> str:
    session = state.session_factory()
    try:
        job = submit_job(request, Response(), body, session, state.settings, viewer.principal, None)
        return str(job.id)  # type: ignore[union-attr]
    finally:
        session.close()


@router.post("/jobs")
async def submit(request: Request, viewer: Trainer, state: State) -> Response:
    form = await checked_form(request, viewer)
    raw = _body(form)
    try:
        body = TrainingJobCreate.model_validate(raw)
        job_id = await run_in_threadpool(_submit, request, state, body, viewer)
    except ValidationError as exc:
        error = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        return await _jobs_page(request, viewer, state, 422, error=error, values=dict(form))
    except Problem as exc:
        return await _jobs_page(request, viewer, state, exc.status, error=exc.detail, values=dict(form))
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _job(state: AppState, job_id: str) -> Any:
    with session_scope(state.session_factory) as session:
        job = job_records.get_job(session, job_id)
        if job is None:
            return None
        return job_out(job, metrics=job_records.epoch_metrics(session, job_id))


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: JobId, viewer: Trainer, state: State) -> Response:
    job = await run_in_threadpool(_job, state, job_id)
    if job is None:
        return page(request, "refused.html", viewer, 404, message=f"There is no training job {job_id}.")
    return page(request, "job.html", viewer, job=job, finished=job.status in JOB_FINISHED_STATUSES)


@router.get("/jobs/{job_id}/curves.svg")
async def curves(job_id: JobId, viewer: Trainer, state: State) -> Response:
    job = await run_in_threadpool(_job, state, job_id)
    if job is None:
        return Response(f"no training job {job_id}", 404, media_type="text/plain")
    epochs = [m.model_dump() for m in job.metrics]
    svg = epoch_curves(epochs, f"Training job {job_id[:8]}: {job.status}, epoch {job.epoch} of {job.epochs}")
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, job_id: JobId, viewer: Trainer, state: State) -> Response:
    await checked_form(request, viewer)

    def run() -> None:
        session = state.session_factory()
        try:
            cancel_training_job(job_id, Response(), session, state.settings, viewer.principal)
        finally:
            session.close()

    try:
        await run_in_threadpool(run)
    except Problem as exc:
        job = await run_in_threadpool(_job, state, job_id)
        if job is None:
            return page(request, "refused.html", viewer, 404, message=exc.detail)
        return page(request, "job.html", viewer, exc.status, job=job, finished=True, error=exc.detail)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _study(request: Request, state: AppState, tuning_id: str) -> Any:
    with session_scope(state.session_factory) as session:
        job = tuning_jobs.get_tuning_job(session, tuning_id)
        if job is None:
            return None
        return tuning_out(
            request, state.settings, job, tuning_jobs.trial_jobs(session, tuning_id), detail=True
        )


@router.get("/tuning/{tuning_id}")
async def study_page(request: Request, tuning_id: JobId, viewer: Trainer, state: State) -> Response:
    study = await run_in_threadpool(_study, request, state, tuning_id)
    if study is None:
        return page(request, "refused.html", viewer, 404, message=f"There is no tuning job {tuning_id}.")
    return page(request, "tuning.html", viewer, study=study, finished=study.status in JOB_FINISHED_STATUSES)


@router.get("/tuning/{tuning_id}/pictures/{name}")
async def study_picture(
    tuning_id: JobId,
    name: Annotated[Literal["optimization_history.png", "param_importances.png"], Path()],
    viewer: Trainer,
    state: State,
) -> Response:
    def run() -> Response:
        session = state.session_factory()
        try:
            return get_tuning_picture(tuning_id, name, session, state.artifacts, viewer.principal)
        finally:
            session.close()

    try:
        return await run_in_threadpool(run)
    except Problem as exc:
        return Response(exc.detail, exc.status, media_type="text/plain")


@router.post("/tuning/{tuning_id}/cancel")
async def study_cancel(request: Request, tuning_id: JobId, viewer: Trainer, state: State) -> Response:
    await checked_form(request, viewer)

    def run() -> None:
        session = state.session_factory()
        try:
            cancel_tuning(tuning_id, request, session, state.settings, viewer.principal)
        finally:
            session.close()

    try:
        await run_in_threadpool(run)
    except Problem as exc:
        return page(request, "refused.html", viewer, exc.status, message=exc.detail)
    return RedirectResponse(f"/tuning/{tuning_id}", status_code=303)
