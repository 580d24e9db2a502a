"""Reviews: a person's word on a check's photo, and the queue of checks waiting for one.

The rule (what each outcome means, which correct the record) lives in records/reviews.py; the console
(api/console/) and this JSON API both call it, so the two can never disagree.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query
from sqlalchemy.orm import Session

from api.deps import Principal, get_db, require_scope
from api.problems import VALIDATION, Problem, problem_responses
from api.review_schemas import ReviewBody
from api.routes.bins import BinId
from api.routes.checks import CheckId, check_out
from api.schemas import BIN_ID_PATTERN, MAX_ID, CheckOut, CheckPage
from records import bins as bin_records
from records import reviews as review_records

log = logging.getLogger("binwatch.api.reviews")

router = APIRouter(prefix="/v1", tags=["bins"])


def store_review(
    session: Session, bin_id: str, check_id: int, body: ReviewBody, principal: Principal
) -> CheckOut:
    """Store a review (committed) and answer with the reviewed check; Problem 404/422 otherwise."""
    try:
        review = review_records.review_check(
            session,
            bin_id,
            check_id,
            outcome=body.outcome,
            seen_count=body.seen_count,
            reviewer=principal.actor,
            correct_record=body.correct_record,
        )
        session.commit()
    except (review_records.CheckNotFound, bin_records.BinNotFound) as exc:
        raise Problem(404, str(exc)) from exc
    except ValueError as exc:
        raise Problem(
            422,
            str(exc),
            type=VALIDATION,
            title="Invalid request",
            errors=[{"loc": ["body", "outcome"], "msg": str(exc), "type": "value_error"}],
        ) from exc
    log.info(
        "check %s of bin %s reviewed by %s: %s %s%s",
        check_id,
        bin_id,
        principal.actor,
        review.outcome,
        review.seen_count,
        " (record corrected)" if review.corrected_record else "",
    )
    return check_out(review.check, review)


@router.post(
    "/bins/{bin_id}/checks/{check_id}/review",
    response_model=CheckOut,
    summary="Review a check's photo",
    responses=problem_responses(401, 403, 404, 422),
)
def review_check(
    bin_id: BinId,
    check_id: CheckId,
    body: Annotated[ReviewBody, Body()],
    key: Annotated[Principal, Depends(require_scope("inventory"))],
    session: Annotated[Session, Depends(get_db)],
) -> CheckOut:
    """Say what the photo shows: ``confirmed`` (the recorded count is right), ``counted`` with the
    ``seen_count`` you see (and ``correct_record`` to set the bin's record to it), or ``unusable``.
    Reviewing again adds a review; the latest counts, all are kept. Reviewed photos with a count train
    later models (``"dataset": {"reviews": {}}``, docs/console.md). Needs ``inventory``."""
    return store_review(session, bin_id, check_id, body, key)


@router.get(
    "/review-queue",
    response_model=CheckPage,
    summary="Checks waiting for a review",
    responses=problem_responses(401, 403, 422),
)
def review_queue(
    key: Annotated[Principal, Depends(require_scope("inventory"))],
    session: Annotated[Session, Depends(get_db)],
    verdict: Annotated[
        Literal["mismatch", "uncertain"] | None, Query(description="Only this verdict (default: both).")
    ] = None,
    reviewed: Annotated[
        Literal["no", "yes", "all"], Query(description="no: waiting for a review (default); yes: reviewed.")
    ] = "no",
    bin_id: Annotated[
        str | None, Query(pattern=BIN_ID_PATTERN, description="Only this bin's checks.")
    ] = None,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="The previous page's next_cursor.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
) -> CheckPage:
    """Mismatched and uncertain checks, newest first, with their reviews. Needs ``inventory``."""
    page = review_records.queue(
        session,
        verdicts=(verdict,) if verdict else review_records.QUEUE_VERDICTS,
        reviewed={"no": False, "yes": True, "all": None}[reviewed],
        bin_id=bin_id,
        before=before,
        limit=limit,
    )
    return CheckPage(
        items=[check_out(item.check, item.review) for item in page.items], next_cursor=page.next_cursor
    )
