"""Models: the versions with their figures, one version's pictures and promotions, and promoting (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api.console.render import page
from api.console.session import ScopeMissing, SignedIn, State, checked_form
from api.deps import AppState
from api.problems import Problem
from api.routes.models import model_detail, model_out, promote_model
from api.schemas import MAX_ID, PromoteBody
from records import model_versions
from records.artifacts import ArtifactNotFound
from records.db import session_scope

router = APIRouter(include_in_schema=False)

ModelId = Annotated[int, Path(ge=1, le=MAX_ID)]
# Pictures a version may carry (records' ``plots``), in the order the page shows them.
PLOT_TITLES = {
    "training_curves": "Training curves",
    "confusion_matrix": "Confusion matrix (validation)",
    "reliability": "Reliability (calibration)",
}


def _versions(state: AppState, before: int | None) -> tuple[list[Any], str | None]:
    with session_scope(state.session_factory) as session:
        found = model_versions.list_versions(session, before=before, limit=50)
        return [model_out(v, state) for v in found.items], found.next_cursor


@router.get("/models")
async def models(
    request: Request,
    viewer: SignedIn,
    state: State,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    promoted: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    versions, next_cursor = await run_in_threadpool(_versions, state, before)
    notice = f"Version {promoted} is now serving." if promoted else None
    return page(
        request,
        "models.html",
        viewer,
        versions=versions,
        next_cursor=next_cursor,
        first_page=before is None,
        notice=notice,
    )


def _detail(state: AppState, model_id: int) -> Any:
    with session_scope(state.session_factory) as session:
        try:
            return model_detail(model_versions.get_version(session, model_id), state)
        except model_versions.ModelVersionNotFound:
            return None


@router.get("/models/{model_id}")
async def model_page(request: Request, model_id: ModelId, viewer: SignedIn, state: State) -> Response:
    detail = await run_in_threadpool(_detail, state, model_id)
    if detail is None:
        return page(request, "refused.html", viewer, 404, message=f"There is no model version {model_id}.")
    plots = [(name, PLOT_TITLES.get(name, name.replace("_", " "))) for name in detail.plots]
    plots.sort(key=lambda p: list(PLOT_TITLES).index(p[0]) if p[0] in PLOT_TITLES else len(PLOT_TITLES))
    metrics = detail.metrics
    per_class = (
        metrics.get("per_class_accuracy") if isinstance(metrics.get("per_class_accuracy"), dict) else None
    )
    return page(request, "model.html", viewer, model=detail, plots=plots, per_class=per_class)


def _plot(state: AppState, model_id: int, name: str) -> bytes | None:
    with session_scope(state.session_factory) as session:
        try:
            key = (model_versions.get_version(session, model_id).plots or {}).get(name)
        except model_versions.ModelVersionNotFound:
            return None
    if key is None:
        return None
    try:
        return state.artifacts.get_bytes(key)
    except ArtifactNotFound:
        return None


@router.get("/models/{model_id}/plots/{name}")
async def plot(
    model_id: ModelId,
    name: Annotated[str, Path(pattern=r"^[a-z0-9_]{1,64}$")],
    viewer: SignedIn,
    state: State,
) -> Response:
    data = await run_in_threadpool(_plot, state, model_id, name)
    if data is None:
        return Response(f"model version {model_id} has no picture {name!r}", 404, media_type="text/plain")
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.post("/models/{model_id}/promote")
async def promote(request: Request, model_id: ModelId, viewer: SignedIn, state: State) -> Response:
    form = await checked_form(request, viewer)
    if not viewer.can("admin"):
        raise ScopeMissing(viewer, "admin")
    reason = str(form.get("reason") or "").strip() or "promoted in the console"
    try:
        try:
            body = PromoteBody(reason=reason[:2000])
        except ValidationError as exc:
            message = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise Problem(422, f"the reason cannot be stored: {message}") from exc
        await promote_model(model_id, viewer.principal, state, body)
    except Problem as exc:
        versions, next_cursor = await run_in_threadpool(_versions, state, None)
        return page(
            request,
            "models.html",
            viewer,
            exc.status,
            versions=versions,
            next_cursor=next_cursor,
            first_page=True,
            error=exc.detail,
        )
    return RedirectResponse(f"/models?promoted={model_id}", status_code=303)
