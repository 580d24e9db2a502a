"""A bin's page: its record, its items (from ABID metadata when loaded), its checks with thumbnails."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api.console.check_view import view
from api.console.render import page
from api.console.session import State, Viewer, require
from api.deps import AppState
from api.schemas import BIN_ID_PATTERN, MAX_ID
from records import bins as bin_records
from records import reviews
from records.db import session_scope
from records.text_rules import scrub

router = APIRouter(include_in_schema=False)

Inventory = Annotated[Viewer, Depends(require("inventory"))]
HISTORY_PAGE = 24


@router.get("/bins")
async def find_bin(request: Request, viewer: Inventory, id: str = "") -> Response:  # noqa: A002
    wanted = id.strip()
    if re.fullmatch(BIN_ID_PATTERN, wanted):
        return RedirectResponse(f"/bins/{wanted}", status_code=303)
    return page(
        request,
        "refused.html",
        viewer,
        422,
        message=f"{wanted!r} is not a bin id: use letters, digits, '.', '_' and '-' (for example 00011).",
    )


def _bin(state: AppState, bin_id: str, before: int | None) -> dict[str, Any] | None:
    with session_scope(state.session_factory) as session:
        try:
            bin_ = bin_records.require_bin(session, bin_id)
        except bin_records.BinNotFound:
            return None
        history = bin_records.list_checks(session, bin_id, before=before, limit=HISTORY_PAGE)
        found = reviews.reviews_of(session, [c.id for c in history.items])
        return {
            "bin": bin_,
            "items": scrub(bin_.items) or [],
            "checks": [view(c, found.get(c.id)) for c in history.items],
            "next_cursor": history.next_cursor,
        }


@router.get("/bins/{bin_id}")
async def bin_page(
    request: Request,
    viewer: Inventory,
    state: State,
    bin_id: Annotated[str, Path(pattern=BIN_ID_PATTERN)],
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    shown = await run_in_threadpool(_bin, state, bin_id, before)
    if shown is None:
        return page(
            request,
            "refused.html",
            viewer,
            404,
            message=f"Bin {bin_id!r} has no record. Create it with PUT /v1/bins/{bin_id} (a count or its "
            "ABID metadata json).",
        )
    return page(request, "bin.html", viewer, first_page=before is None, **shown)
