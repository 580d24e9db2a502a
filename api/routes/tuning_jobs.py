"""Tuning jobs over HTTP: submit (202), list, show (every trial), cancel, and the study's pictures.

A tuning job is an Optuna study whose trials are training jobs that any worker runs (worker/trials.py,
docs/tuning.md). Submission validates the search space (422 naming the setting at fault), creates the
study in the tuning storage (records/tuning_storage.py) with the base configuration as its first trial,
writes the job and its first ``parallelism`` trial jobs, commits, then queues them; when the broker cannot
be reached the job fails with the reason and the client gets a 503, as for training jobs.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from sqlalchemy.orm import Session

from api.deps import Principal, get_artifacts, get_db, get_settings, require_scope
from api.problems import URN, VALIDATION, Problem
from api.routes.training_jobs import AUTH_DOCS, QUEUE_UNAVAILABLE, celery_for, invalid, problem_docs
from api.tuning_job_schemas import TuningJobCreate, TuningJobOut, TuningJobPage, TuningStatus, tuning_out
from model.tuning.objective import objective
from model.tuning.space import SearchSpace, SpaceError
from records import jobs as job_records
from records import tuning_jobs
from records.artifacts import ArtifactNotFound, ArtifactStore
from records.job_queue import QueueUnavailable, enqueue_training, time_limits
from records.job_spec import (
    check_dataset_root,
    check_endpoint,
    resolve_config,
)
from records.orm import TuningJob, utcnow
from records.tuning_storage import open_storage
from settings import Settings

log = logging.getLogger("binwatch.api.tuning_jobs")

router = APIRouter(prefix="/tuning-jobs", tags=["tuning jobs"])

TUNING_NOT_FOUND = URN + "tuning-job-not-found"
TUNING_FINISHED = URN + "tuning-job-finished"
STUDY_STORAGE_UNAVAILABLE = URN + "study-storage-unavailable"

Db = Annotated[Session, Depends(get_db)]
CurrentSettings = Annotated[Settings, Depends(get_settings)]
Artifacts = Annotated[ArtifactStore, Depends(get_artifacts)]
Trainer = Annotated[Principal, Depends(require_scope("train"))]
PICTURES = ("optimization_history.png", "param_importances.png")

_NOT_FOUND = {404: (TUNING_NOT_FOUND, "no tuning job 3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b")}

TuningId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=36,
        pattern=r"^[0-9a-f]+$",
        description="The tuning job's id (32 hex digits).",
    ),
]


def _not_found(tuning_id: str) -> Problem:
    return Problem(404, f"no tuning job {tuning_id}", type=TUNING_NOT_FOUND, title="Not Found")


@router.post(
    "",
    status_code=202,
    response_model=TuningJobOut,
    summary="Submit a tuning job",
    responses=problem_docs(
        {
            **AUTH_DOCS,
            422: (VALIDATION, "lr: low 0.01 is greater than high 0.0001"),
            503: (
                QUEUE_UNAVAILABLE,
                "the job queue at redis://redis:6379/0 is unreachable (Connection refused); the job was not "
                "queued. Nothing will run; submit again once the queue is back.",
            ),
        }
    ),
)
def submit_tuning_job(
    request: Request,
    response: Response,
    body: Annotated[TuningJobCreate, Body()],
    db: Db,
    settings: CurrentSettings,
    principal: Trainer,
) -> TuningJobOut:
    """Queue a study: its trials run as training jobs on the workers, ``parallelism`` at a time, until
    ``trials`` have run or ``timeout_s`` has passed; then the best trial's model is registered and the
    promotion policy applied. Answers 202; follow it with `GET /v1/tuning-jobs/{id}`."""
    try:
        check_endpoint(body.dataset.endpoint_url, settings.dataset_endpoint_allowlist)
    except ValueError as exc:
        raise invalid(str(exc), ["body", "dataset", "endpoint_url"]) from exc
    # No location: reviewed photos only, no folder to check.
    for loc, uri in body.dataset.locations():
        try:
            check_dataset_root(uri, settings.dataset_roots)
        except ValueError as exc:
            raise invalid(str(exc), ["body", "dataset", *loc]) from exc
    try:
        # Reviewed photos are fixed now: a job resumed later (or each node of a group) uses the same ones.
        dataset = body.dataset.pinned(utcnow()).stored()
    except ValueError as exc:
        raise invalid(str(exc), ["body", "dataset", "reviews", "reviewed_after"]) from exc
    if body.trials > settings.tuning_max_trials:
        raise invalid(
            f"trials {body.trials} is above this deployment's limit of {settings.tuning_max_trials} "
            "(BINWATCH_TUNING_MAX_TRIALS)",
            ["body", "trials"],
        )
    try:
        space = SearchSpace.from_dict({name: p.as_space_dict() for name, p in body.space.items()})
    except SpaceError as exc:
        raise invalid(str(exc), ["body", "space", exc.field]) from exc
    hp = body.hyperparameters
    try:
        config = resolve_config(hp)
    except ValueError as exc:
        raise invalid(str(exc), ["body", "hyperparameters"]) from exc
    if hp.time_limit_seconds is not None and hp.time_limit_seconds > settings.job_time_limit_seconds:
        raise invalid(
            f"time_limit_seconds {hp.time_limit_seconds} is above this deployment's limit of "
            f"{settings.job_time_limit_seconds} s (BINWATCH_JOB_TIME_LIMIT_SECONDS)",
            ["body", "hyperparameters", "time_limit_seconds"],
        )
    for i, point in enumerate(body.points):
        missing = sorted(set(space.names) - set(point))
        extra = sorted(set(point) - set(space.names))
        if missing or extra or space.point_of(point) is None:
            why = (
                f"names no value for {', '.join(missing)}"
                if missing
                else f"names settings outside the space: {', '.join(extra)}"
                if extra
                else "lies outside the space"
            )
            raise invalid(f"points[{i}] {why}", ["body", "points", i])
    goal = objective(body.objective)
    if goal.name == "accuracy_0-5" and config.get("classes") == "udacity":
        raise invalid(
            "objective accuracy_0-5 needs the overflow classes (udacity classes have no 0)",
            ["body", "objective"],
        )
    soft, _hard = time_limits(settings, hp.time_limit_seconds)
    job = tuning_jobs.create_tuning_job(
        db,
        dataset=dataset,
        params={
            "hyperparameters": hp.model_dump(exclude_none=True),
            "config": config,
            "space": space.to_dict(),
            "objective": goal.name,
            "pruner": body.pruner,
            "seed": body.seed,
            "time_limit_seconds": soft,
            "model_name": body.model_name,
            "submitted_by": principal.actor,
        },
        trials=body.trials,
        parallelism=body.parallelism,
        timeout_s=body.timeout_s,
        promotion_policy=body.promotion_policy,
    )
    try:
        _create_study(settings, job, space, goal.name, body, config)
    except Exception as exc:
        db.rollback()
        log.exception("tuning job: the study storage failed")
        raise Problem(
            503,
            f"the study storage could not be written ({type(exc).__name__}); nothing was queued. "
            "Check BINWATCH_TUNING_STORAGE_URL and that `binwatch db upgrade` has run.",
            type=STUDY_STORAGE_UNAVAILABLE,
            title="Study storage unavailable",
            headers={"Retry-After": "10"},
        ) from exc
    plan = tuning_jobs.plan_trials(db, job)
    added = [tuning_jobs.add_trial_job(db, job) for _ in range(plan.add)]
    db.commit()
    for trial in added:
        try:
            enqueue_training(celery_for(settings), settings, trial.id, str(trial.celery_task_id), soft)
        except QueueUnavailable as exc:
            for t in added:
                job_records.mark_not_queued(db, t.id, f"not queued: {exc}")
            tuning_jobs.finish(db, job.id, "failed", error=f"not queued: {exc}")
            db.commit()
            raise Problem(
                503,
                f"{exc}. Nothing will run; submit again once the queue is back.",
                type=QUEUE_UNAVAILABLE,
                title="Job queue unavailable",
                headers={"Retry-After": "10"},
                tuning_job_id=job.id,
            ) from exc
    log.info(
        "tuning job %s queued by %s: %d trials, %d at once", job.id, principal.actor, job.trials, plan.add
    )
    response.headers["Location"] = str(request.url_for("get_tuning_job", tuning_id=job.id))
    db.refresh(job)
    return tuning_out(request, settings, job, tuning_jobs.trial_jobs(db, job.id), detail=True)


def _create_study(
    settings: Settings,
    job: TuningJob,
    space: SearchSpace,
    goal: str,
    body: TuningJobCreate,
    config: dict[str, Any],
) -> None:
    from model.tuning.study import open_study

    storage = open_storage(settings.resolved_tuning_storage_url)
    study = open_study(storage, job.study_name, objective(goal), pruner=body.pruner, seed=body.seed)
    point = space.point_of(config) if body.baseline else None
    if point is not None:
        # The base configuration first, so the study always shows what it gained over it.
        study.enqueue_trial(point, user_attrs={"baseline": True})
    for given in body.points:
        study.enqueue_trial(dict(given), user_attrs={"given": True})


@router.get(
    "", response_model=TuningJobPage, summary="List tuning jobs", responses=problem_docs(dict(AUTH_DOCS))
)
def list_tuning(
    request: Request,
    db: Db,
    settings: CurrentSettings,
    _principal: Trainer,
    status: Annotated[list[TuningStatus] | None, Query(description="Only these statuses.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(max_length=36, pattern=r"^[0-9a-f]+$")] = None,
) -> TuningJobPage:
    """Tuning jobs, newest first, with their trial counts and best value so far."""
    try:
        page = tuning_jobs.list_tuning_jobs(db, status=status, before=before, limit=limit)
    except LookupError as exc:
        raise invalid(str(exc), ["query", "before"]) from exc
    return TuningJobPage(
        items=[tuning_out(request, settings, j, tuning_jobs.trial_jobs(db, j.id), False) for j in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/{tuning_id}",
    name="get_tuning_job",
    response_model=TuningJobOut,
    summary="Show a tuning job",
    responses=problem_docs({**AUTH_DOCS, **_NOT_FOUND}),
)
def get_tuning(
    tuning_id: TuningId, request: Request, db: Db, settings: CurrentSettings, _principal: Trainer
) -> TuningJobOut:
    """The study: every trial (parameters, state, per-epoch values, duration, host), the best so far, the
    compute the pruner saved, the registered model version and the pictures."""
    job = tuning_jobs.get_tuning_job(db, tuning_id)
    if job is None:
        raise _not_found(tuning_id)
    return tuning_out(request, settings, job, tuning_jobs.trial_jobs(db, tuning_id), detail=True)


@router.post(
    "/{tuning_id}/cancel",
    response_model=TuningJobOut,
    summary="Cancel a tuning job",
    status_code=202,
    responses=problem_docs(
        {**AUTH_DOCS, **_NOT_FOUND, 409: (TUNING_FINISHED, "tuning job 3f2a… already ended (succeeded)")}
    ),
)
def cancel_tuning(
    tuning_id: TuningId, request: Request, db: Db, settings: CurrentSettings, principal: Trainer
) -> TuningJobOut:
    """No more trials start; queued trials are cancelled, running ones stop at their next batch; no model
    version is registered. 409 if the study already ended."""
    outcome, job = tuning_jobs.request_cancel(db, tuning_id)
    db.commit()
    if outcome == tuning_jobs.CancelOutcome.NOT_FOUND or job is None:
        raise _not_found(tuning_id)
    if outcome == tuning_jobs.CancelOutcome.FINISHED:
        raise Problem(
            409,
            f"tuning job {tuning_id} already ended ({job.status})",
            type=TUNING_FINISHED,
            title="Conflict",
        )
    log.info("tuning job %s cancelled by %s", tuning_id, principal.actor)
    return tuning_out(request, settings, job, tuning_jobs.trial_jobs(db, tuning_id), detail=True)


@router.get(
    "/{tuning_id}/pictures/{name}",
    name="get_tuning_picture",
    summary="A study's picture (PNG)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **problem_docs({**AUTH_DOCS, **_NOT_FOUND})},
)
def get_tuning_picture(
    tuning_id: TuningId,
    name: Annotated[Literal["optimization_history.png", "param_importances.png"], Path()],
    db: Db,
    artifacts: Artifacts,
    _principal: Trainer,
) -> Response:
    """Optuna's optimisation history or parameter importances, drawn when the study ended."""
    job = tuning_jobs.get_tuning_job(db, tuning_id)
    if job is None:
        raise _not_found(tuning_id)
    key = (job.pictures or {}).get(name)
    if key is None:
        raise Problem(
            404,
            f"tuning job {tuning_id} has no {name} (pictures are drawn when the study ends; importances need "
            "two complete trials)",
            type=TUNING_NOT_FOUND,
            title="Not Found",
        )
    try:
        data = artifacts.get_bytes(key)
    except ArtifactNotFound as exc:
        raise Problem(404, f"{name} of tuning job {tuning_id} is missing from the artifact store") from exc
    return Response(content=data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
