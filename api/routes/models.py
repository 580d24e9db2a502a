"""The model registry: list versions, inspect one, promote one to serve."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Body, Depends, Path, Query
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import AppState, Principal, get_db, get_state, require_scope
from api.model_manager import ModelLoadError, ServingModel, VersionRef
from api.problems import MODEL_UNLOADABLE, Problem, problem_responses
from api.schemas import (
    MAX_ID,
    ModelDetail,
    ModelOut,
    ModelPage,
    PromoteBody,
    PromoteResult,
    PromotionOut,
    VerdictRuleOut,
)
from api.verdict_rule import rule_for
from records import model_versions
from records.db import session_scope
from records.orm import ModelVersion

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/models", tags=["models"])

HEADLINE_METRICS = ("n", "accuracy", "rmse", "within_one", "ece")

ModelId = Annotated[int, Path(ge=1, le=MAX_ID, description="Model version id.", examples=[3])]


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {k: metrics[k] for k in HEADLINE_METRICS if k in metrics}
    for name, sub in (metrics.get("subsets") or {}).items():
        if isinstance(sub, dict) and "accuracy" in sub:
            out[f"accuracy_{name}"] = sub["accuracy"]
    return out


def model_out(version: ModelVersion, state: AppState) -> ModelOut:
    current = state.models.current
    return ModelOut(
        id=version.id,
        name=version.name,
        sha256=version.sha256,
        architecture=version.architecture,
        classes=version.classes,
        metrics=_headline(version.metrics or {}),
        source=version.source,  # type: ignore[arg-type]
        training_job_id=version.training_job_id,
        is_active=version.is_active,
        serving=current is not None and current.version_id == version.id,
        created_at=version.created_at,
        promoted_at=version.promoted_at,
    )


def model_detail(version: ModelVersion, state: AppState) -> ModelDetail:
    return ModelDetail(
        **model_out(version, state).model_dump(exclude={"metrics"}),
        metrics=version.metrics or {},
        preprocessing=version.preprocessing,
        artifact_key=version.artifact_key,
        plots=version.plots or {},
        operating_points=version.operating_points,
        verdict_rule=VerdictRuleOut(**asdict(rule_for(state.settings, version.operating_points))),
        promotions=[
            PromotionOut(promoted_at=p.promoted_at, actor=p.actor, reason=p.reason)
            for p in version.promotions
        ],
    )


@router.get(
    "", response_model=ModelPage, summary="List model versions", responses=problem_responses(401, 422)
)
def list_models(
    key: Annotated[Principal, Depends(require_scope(None))],
    state: Annotated[AppState, Depends(get_state)],
    session: Annotated[Session, Depends(get_db)],
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="The previous page's next_cursor.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ModelPage:
    """Registered model versions, newest first, with headline metrics and which one is active.
    Any valid API key."""
    page = model_versions.list_versions(session, before=before, limit=limit)
    return ModelPage(items=[model_out(v, state) for v in page.items], next_cursor=page.next_cursor)


@router.get(
    "/{model_id}",
    response_model=ModelDetail,
    summary="One model version",
    responses=problem_responses(401, 404, 422),
)
def get_model(
    model_id: ModelId,
    key: Annotated[Principal, Depends(require_scope(None))],
    state: Annotated[AppState, Depends(get_state)],
    session: Annotated[Session, Depends(get_db)],
) -> ModelDetail:
    """A model version with its full validation metrics and promotion history. Any valid API key."""
    try:
        return model_detail(model_versions.get_version(session, model_id), state)
    except model_versions.ModelVersionNotFound as exc:
        raise Problem(404, str(exc)) from exc


def _version_ref(state: AppState, model_id: int) -> VersionRef:
    with session_scope(state.session_factory) as session:
        try:
            return VersionRef.of(model_versions.get_version(session, model_id))
        except model_versions.ModelVersionNotFound as exc:
            raise Problem(404, str(exc)) from exc


def _promote(state: AppState, model_id: int, actor: str, reason: str) -> tuple[VersionRef, bool]:
    for attempt in (1, 2, 3):
        try:
            with session_scope(state.session_factory) as session:
                version, changed = model_versions.promote(session, model_id, actor=actor, reason=reason)
                return VersionRef.of(version), changed
        except sa.exc.IntegrityError as exc:
            # Lost a promotion race to a writer that did not take the promotion lock (one-active index);
            # the retry sees its result.
            if attempt == 3:
                raise
            log.warning(
                "promotion of version %s lost a race (%s); trying again",
                model_id,
                str(exc.orig).splitlines()[0],
            )
    raise AssertionError("unreachable")


def _detail(state: AppState, model_id: int) -> ModelDetail:
    with session_scope(state.session_factory) as session:
        return model_detail(model_versions.get_version(session, model_id), state)


@router.post(
    "/{model_id}/promote",
    response_model=PromoteResult,
    summary="Make a model version the one that serves",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def promote_model(
    model_id: ModelId,
    key: Annotated[Principal, Depends(require_scope("admin"))],
    state: Annotated[AppState, Depends(get_state)],
    body: Annotated[PromoteBody | None, Body()] = None,
) -> PromoteResult:
    """Loads and verifies the version's checkpoint first (409 and nothing changes if it cannot be
    loaded), then makes it the only active version and records the promotion. This process serves it
    when the response arrives; other API processes switch within ``model_poll_seconds``. Requests
    already in flight finish on the model they started with. Needs the ``admin`` scope.
    """
    ref = await run_in_threadpool(_version_ref, state, model_id)
    try:
        loaded = await run_in_threadpool(state.models.load, ref)
    except ModelLoadError as exc:
        raise Problem(
            409,
            f"model version {model_id} cannot be loaded, so it was not promoted: {exc}",
            type=MODEL_UNLOADABLE,
            title="Model cannot be loaded",
        ) from exc
    reason = (body or PromoteBody()).reason
    promoted, changed = await run_in_threadpool(_promote, state, model_id, key.actor, reason)
    # promoted_at changed with the promotion; install under the new stamp so older polls cannot undo it.
    state.models.install(ServingModel(promoted, loaded.predictor))
    detail = await run_in_threadpool(_detail, state, model_id)
    return PromoteResult(model=detail, changed=changed)
