"""Training jobs over HTTP: submit (202), list, show, cancel; workers run them (docs/training-jobs.md).

Submission writes the job row *before* queueing the task, so a worker always finds the row it is told
about; when the broker cannot be reached the row is marked failed with the reason and the client gets a
503, so no job is left posing as queued. This module never imports ``worker``: it only sends the task by
name through records.job_queue.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from http import HTTPStatus
from typing import Annotated, Any

from celery import Celery
from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import idempotency
from api.deps import Principal, get_db, get_settings, require_scope
from api.problems import PROBLEM_MEDIA_TYPE, URN, VALIDATION, Problem, ProblemDetails
from api.training_groups import group_problem
from api.training_job_schemas import (
    JobStatus,
    TrainingJobCreate,
    TrainingJobOut,
    TrainingJobPage,
    job_out,
)
from records import idempotency as idempotency_records
from records import job_groups
from records import jobs as job_records
from records.job_queue import QueueUnavailable, enqueue_training, make_celery, time_limits
from records.job_spec import (
    check_dataset_root,
    check_endpoint,
    resolve_config,
)
from records.orm import utcnow
from settings import Settings

log = logging.getLogger("binwatch.api.training_jobs")

# api/app.py mounts this router under /v1, so these paths become /v1/training-jobs/...
router = APIRouter(prefix="/training-jobs", tags=["training jobs"])

#: The job queue (Redis) could not be reached: nothing was queued; retry later.
QUEUE_UNAVAILABLE = URN + "queue-unavailable"
#: Cancel was asked for a job that has already ended.
JOB_FINISHED = URN + "job-finished"
JOB_NOT_FOUND = URN + "job-not-found"

Db = Annotated[Session, Depends(get_db)]
CurrentSettings = Annotated[Settings, Depends(get_settings)]
Trainer = Annotated[Principal, Depends(require_scope("train"))]


JobId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=36,
        pattern=r"^[0-9a-f]+$",
        description="The job's id (32 hex digits).",
        examples=["3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b"],
    ),
]


def problem_docs(examples: dict[int, tuple[str, str]]) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for status, (type_, detail) in examples.items():
        example = {"type": type_, "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
        out[status] = {
            "model": ProblemDetails,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"example": example}},
        }
    return out


AUTH_DOCS = {
    401: (
        "urn:binwatch:problem:unauthenticated",
        "missing API key: send it as 'Authorization: Bearer <key>'",
    ),
    403: ("urn:binwatch:problem:insufficient-scope", "API key 'ci' has scopes predict; this needs 'train'"),
}
_NOT_FOUND = {404: (JOB_NOT_FOUND, "no training job 3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b")}


# ------------------------------------------------------------------------------------------------ helpers


_celery_apps: dict[tuple[Any, ...], Celery] = {}
_celery_lock = threading.Lock()


def celery_for(settings: Settings) -> Celery:
    """One producer app per process and broker configuration: it keeps a connection pool, so a
    submission costs one round trip, and it reconnects by itself once a stopped broker is back."""
    key = (
        settings.resolved_broker_url,
        settings.broker_key_prefix,
        settings.broker_connect_timeout,
        settings.resolved_visibility_timeout,
    )
    with _celery_lock:
        app = _celery_apps.get(key)
        if app is None:
            app = _celery_apps[key] = make_celery(settings, producer=True)
        return app


def _resend_if_unsent(db: Session, settings: Settings, job_id: str) -> None:
    """A replayed submission whose job no worker has taken yet is queued again.

    The API may have died between committing the job and sending its task; then only this retry can
    get it queued. When the task was sent after all, the duplicate is harmless: a job has one owner
    (records/jobs.py claim_job) and a task for a job that is running or finished does nothing.
    """
    job = job_records.get_job(db, job_id)
    if job is None or job.status != "queued" or job.started_at is not None or not job.celery_task_id:
        return
    soft = (job.params or {}).get("time_limit_seconds")
    try:
        enqueue_training(celery_for(settings), settings, job.id, job.celery_task_id, soft)
    except QueueUnavailable as exc:
        log.warning("training job %s: queueing it again on a replayed submission failed: %s", job_id, exc)


def _not_found(job_id: str) -> Problem:
    return Problem(404, f"no training job {job_id}", type=JOB_NOT_FOUND, title="Not Found")


def invalid(detail: str, loc: list[str | int]) -> Problem:
    return Problem(
        422,
        detail,
        type=VALIDATION,
        title="Invalid request",
        errors=[{"loc": loc, "msg": detail, "type": "value_error"}],
    )


# ------------------------------------------------------------------------------------------------- routes


@router.post(
    "",
    status_code=202,
    response_model=TrainingJobOut,
    summary="Submit a training job",
    responses=problem_docs(
        {
            **AUTH_DOCS,
            422: (
                VALIDATION,
                "hyperparameters.recipe: unknown recipe 'fast'; choose one of cpu-quick, gpu-full, smoke",
            ),
            503: (
                QUEUE_UNAVAILABLE,
                "the job queue at redis://redis:6379/0 is unreachable (Connection refused); the job was not "
                "queued. Retry once the queue is back.",
            ),
        }
    ),
)
def submit_job(
    request: Request,
    response: Response,
    body: Annotated[TrainingJobCreate, Body()],
    db: Db,
    settings: CurrentSettings,
    principal: Trainer,
    idempotency_key: idempotency.IdempotencyKey = None,
) -> TrainingJobOut | JSONResponse:
    """Queue a training job; a worker on the `training` queue runs it. Answers 202 with the job, whose
    `status` then moves through queued, running and succeeded / failed / cancelled
    (`GET /v1/training-jobs/{id}`). The dataset path is read by the worker hosts; a path they cannot read
    fails the job with a readable `error` within seconds of it starting. `"reviews": {}` adds the photos
    people reviewed (the reviews made before this submission), or trains on them alone without a `uri`."""
    idem = idempotency.request_for(
        idempotency_key, principal.key_id, "POST /v1/training-jobs", body.model_dump_json()
    )
    first = idempotency.replay(db, idem)
    if first is not None:
        job_id = str(json.loads(first.body)["id"])
        _resend_if_unsent(db, settings, job_id)
        first.headers["Location"] = str(request.url_for("get_training_job", job_id=job_id))
        return first
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
    problem = group_problem(body.nodes, body.procs_per_node, int(config["batch_size"]), settings)
    if problem is not None:
        raise invalid(problem[0], ["body", problem[1]])
    soft, _hard = time_limits(settings, hp.time_limit_seconds)
    task_id = uuid.uuid4().hex
    job = job_records.create_job(
        db,
        dataset=dataset,
        params={
            "hyperparameters": hp.model_dump(exclude_none=True),
            "config": config,
            "time_limit_seconds": soft,
            "model_name": body.model_name,
            "submitted_by": principal.actor,
        },
        promotion_policy=body.promotion_policy,
        epochs=int(config["epochs"]),
        celery_task_id=task_id,
        nodes=body.nodes,
        procs_per_node=body.procs_per_node,
    )
    db.flush()
    db.refresh(job)
    # The answer is stored with the job (one commit): a client that never saw it retries with its key.
    try:
        idempotency.remember(db, idem, 202, job_out(job, metrics=[]).model_dump(mode="json"))
        # Committed before queueing: a worker fast enough to take the task at once must find the row.
        db.commit()
    except IntegrityError:
        # A request with the same key committed first (its job, not this one, is the submission).
        db.rollback()
        first = idempotency.replay(db, idem)
        if first is None:
            raise
        return first
    try:
        enqueue_training(celery_for(settings), settings, job.id, task_id, soft)
    except QueueUnavailable as exc:
        job_records.mark_not_queued(db, job.id, f"not queued: {exc}")
        if idem is not None:
            # The client gets a 503: its retry must submit again, not replay a 202 for a dead job.
            idempotency_records.forget(db, idem.api_key_id, idem.key)
        db.commit()
        log.warning("training job %s not queued: %s", job.id, exc)
        raise Problem(
            503,
            f"{exc}. Nothing will run; submit again once the queue is back (predictions are unaffected).",
            type=QUEUE_UNAVAILABLE,
            title="Job queue unavailable",
            headers={"Retry-After": "10"},
            job_id=job.id,
        ) from exc
    log.info("training job %s queued by %s", job.id, principal.actor)
    response.headers["Location"] = str(request.url_for("get_training_job", job_id=job.id))
    return job_out(job, metrics=[])


@router.get(
    "",
    response_model=TrainingJobPage,
    summary="List training jobs",
    responses=problem_docs(dict(AUTH_DOCS)),
)
def list_training_jobs(
    db: Db,
    _principal: Trainer,
    status: Annotated[list[JobStatus] | None, Query(description="Only jobs with these statuses.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        str | None,
        Query(max_length=36, pattern=r"^[0-9a-f]+$", description="The previous page's next_cursor."),
    ] = None,
) -> TrainingJobPage:
    """Jobs, newest first, each with its newest finished epoch."""
    try:
        page = job_records.list_jobs(db, status=status, before=before, limit=limit)
    except LookupError as exc:
        raise invalid(str(exc), ["query", "before"]) from exc
    latest = job_records.latest_epochs(db, [j.id for j in page.items])
    return TrainingJobPage(
        items=[job_out(j, latest=latest.get(j.id)) for j in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/{job_id}",
    name="get_training_job",
    response_model=TrainingJobOut,
    summary="Show a training job",
    responses=problem_docs({**AUTH_DOCS, **_NOT_FOUND}),
)
def get_training_job(
    job_id: JobId,
    db: Db,
    _principal: Trainer,
) -> TrainingJobOut:
    """Status, epoch i of N, every finished epoch's losses and validation metrics, timings, the worker's
    host, the error of a failed job, the promotion decision and the model version it registered."""
    job = job_records.get_job(db, job_id)
    if job is None:
        raise _not_found(job_id)
    return job_out(
        job, metrics=job_records.epoch_metrics(db, job_id), group=job_groups.group_rows(db, job.group_id)
    )


@router.post(
    "/{job_id}/cancel",
    response_model=TrainingJobOut,
    summary="Cancel a training job",
    responses={
        202: {
            "description": "Cancel requested: the running job stops at its next batch.",
            "model": TrainingJobOut,
        },
        **problem_docs(
            {**AUTH_DOCS, **_NOT_FOUND, 409: (JOB_FINISHED, "training job 3f2a… already ended (succeeded)")}
        ),
    },
)
def cancel_training_job(
    job_id: JobId,
    response: Response,
    db: Db,
    settings: CurrentSettings,
    principal: Trainer,
) -> TrainingJobOut:
    """A queued job is cancelled at once (200). A running one is flagged (202) and its worker stops it at
    the next batch, within seconds; no model version is registered. A job that already ended: 409."""
    outcome, job = job_records.request_cancel(db, job_id, settings.job_stale_after_seconds)
    db.commit()
    if outcome == job_records.CancelOutcome.NOT_FOUND or job is None:
        raise _not_found(job_id)
    if outcome == job_records.CancelOutcome.FINISHED:
        raise Problem(
            409, f"training job {job_id} already ended ({job.status})", type=JOB_FINISHED, title="Conflict"
        )
    log.info("training job %s: cancel %s by %s", job_id, outcome, principal.actor)
    response.status_code = 202 if outcome == job_records.CancelOutcome.REQUESTED else 200
    return job_out(job, metrics=job_records.epoch_metrics(db, job_id))
