"""The mismatch queue, one check's review page, the review itself, and the checks' photos."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api import images
from api.console.check_view import view
from api.console.render import page
from api.console.session import State, Viewer, checked_form, require, whole_number
from api.deps import AppState
from api.problems import Problem
from api.review_schemas import ReviewBody
from api.routes.reviews import store_review
from api.schemas import BIN_ID_PATTERN, MAX_ID
from records import reviews
from records.artifacts import ArtifactNotFound
from records.db import session_scope
from records.orm import BinCheck

router = APIRouter(include_in_schema=False)

Inventory = Annotated[Viewer, Depends(require("inventory"))]
CheckId = Annotated[int, Path(ge=1, le=MAX_ID)]
PAGE_SIZE = 12


def _queue(state: AppState, verdict: str, reviewed: str, bin_id: str | None, before: int | None) -> Any:
    with session_scope(state.session_factory) as session:
        page_ = reviews.queue(
            session,
            verdicts=(verdict,) if verdict in reviews.QUEUE_VERDICTS else reviews.QUEUE_VERDICTS,
            reviewed={"no": False, "yes": True, "all": None}[reviewed],
            bin_id=bin_id or None,
            before=before,
            limit=PAGE_SIZE,
        )
        return (
            [view(item.check, item.review) for item in page_.items],
            page_.next_cursor,
            reviews.queue_size(session),
        )


@router.get("/queue")
async def queue(
    request: Request,
    viewer: Inventory,
    state: State,
    verdict: Literal["all", "mismatch", "uncertain"] = "all",
    reviewed: Literal["no", "yes", "all"] = "no",
    bin: Annotated[str, Query(max_length=128)] = "",  # noqa: A002 - the filter's name in the URL
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    done: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    bin_filter = bin.strip()
    error = None
    if bin_filter and not re.fullmatch(BIN_ID_PATTERN, bin_filter):
        error = f"{bin_filter!r} is not a bin id (letters, digits, '.', '_' and '-')"
        bin_filter = ""
    items, next_cursor, waiting = await run_in_threadpool(
        _queue, state, verdict, reviewed, bin_filter, before
    )
    filters = {"verdict": verdict, "reviewed": reviewed, "bin": bin_filter}
    return page(
        request,
        "queue.html",
        viewer,
        items=items,
        next_cursor=next_cursor,
        waiting=waiting,
        filters=filters,
        first_page=before is None,
        error=error,
        notice=f"Check {done} reviewed." if done else None,
    )


def _check(state: AppState, check_id: int) -> Any:
    with session_scope(state.session_factory) as session:
        check = session.get(BinCheck, check_id)
        if check is None:
            return None
        earlier = reviews.history(session, check_id)
        return view(check, earlier[0] if earlier else None, earlier)


def _next_unreviewed(state: AppState, check_id: int) -> int | None:
    with session_scope(state.session_factory) as session:
        older = reviews.queue(session, before=check_id, limit=1).items
        return older[0].check.id if older else None


@router.get("/checks/{check_id}")
async def check_page(
    request: Request,
    check_id: CheckId,
    viewer: Inventory,
    state: State,
    done: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    shown = await run_in_threadpool(_check, state, check_id)
    if shown is None:
        return page(request, "refused.html", viewer, 404, message=f"There is no check {check_id}.")
    notice = f"Check {done} reviewed; this is the next one waiting." if done else None
    return page(request, "check.html", viewer, item=shown, notice=notice)


def _review(state: AppState, bin_id: str, check_id: int, body: ReviewBody, viewer: Viewer) -> None:
    with session_scope(state.session_factory) as session:
        store_review(session, bin_id, check_id, body, viewer.principal)


@router.post("/checks/{check_id}/review")
async def review(request: Request, check_id: CheckId, viewer: Inventory, state: State) -> Response:
    form = await checked_form(request, viewer)
    shown = await run_in_threadpool(_check, state, check_id)
    if shown is None:
        return page(request, "refused.html", viewer, 404, message=f"There is no check {check_id}.")
    outcome = str(form.get("outcome") or "")
    seen = str(form.get("seen_count") or "").strip()
    error = None
    try:
        count = whole_number(seen) if outcome == "counted" else None
        if outcome == "counted" and seen and count is None:
            raise ValueError(f"the count you see must be a whole number (0 or more), not {seen!r}")
        # The form's fields as given (the count only with "counted": the field is always filled in), so an
        # inconsistent choice is refused with the same message as over JSON.
        body = ReviewBody.model_validate(
            {"outcome": outcome, "seen_count": count, "correct_record": form.get("correct_record") == "on"}
        )
        await run_in_threadpool(_review, state, shown.check.bin_id, check_id, body, viewer)
    except ValidationError as exc:
        error = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        if not outcome:
            error = "Choose what you see: the recorded count, another count, or an unusable photo."
    except (ValueError, Problem) as exc:
        error = exc.detail if isinstance(exc, Problem) else str(exc)
    if error:
        return page(request, "check.html", viewer, 422, item=shown, error=error)
    if form.get("then") == "next":
        following = await run_in_threadpool(_next_unreviewed, state, check_id)
        if following is not None:
            return RedirectResponse(f"/checks/{following}?done={check_id}", status_code=303)
    return RedirectResponse(f"/queue?done={check_id}", status_code=303)


def _photo(state: AppState, check_id: int) -> tuple[bytes, str] | None:
    with session_scope(state.session_factory) as session:
        check = session.get(BinCheck, check_id)
        key = None if check is None else check.image_key
    if key is None:
        return None
    try:
        data = state.artifacts.get_bytes(key)
    except ArtifactNotFound:
        return None
    return data, images.CONTENT_TYPE_OF_EXTENSION.get(key.rsplit(".", 1)[-1], "application/octet-stream")


@router.get("/checks/{check_id}/photo")
async def photo(check_id: CheckId, viewer: Inventory, state: State) -> Response:
    found = await run_in_threadpool(_photo, state, check_id)
    if found is None:
        return Response(f"no photo for check {check_id}", status_code=404, media_type="text/plain")
    data, media = found
    # no-store: a shared browser must not keep a bin's photo after its operator signs out (issue 24).
    headers = {"Content-Security-Policy": "default-src 'none'; sandbox", "Cache-Control": "no-store"}
    return Response(data, media_type=media, headers=headers)
