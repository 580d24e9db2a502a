"""Bins: recorded counts, set directly or from ABID metadata (their checks: api/routes/checks.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Body, Depends, Path, Query, Response
from pydantic import Discriminator, Tag
from sqlalchemy.orm import Session

from api.deps import Principal, get_db, require_scope
from api.problems import Problem, problem_responses
from api.schemas import BIN_ID_PATTERN, AbidMetadataBody, BinCountBody, BinOut, BinPage
from records import bins as bin_records
from records.orm import Bin
from records.text_rules import scrub

router = APIRouter(prefix="/v1/bins", tags=["bins"])

BinId = Annotated[
    str,
    Path(
        pattern=BIN_ID_PATTERN,
        description="The bin's id, compared as a string ('00121' and '121' differ).",
        examples=["00011"],
    ),
]


def _body_kind(value: Any) -> str:
    # ABID metadata is recognised by its EXPECTED_QUANTITY key; everything else is a plain count body,
    # whose validation errors then name expected_count.
    return "abid" if isinstance(value, dict) and "EXPECTED_QUANTITY" in value else "count"


BinBody = Annotated[
    Annotated[BinCountBody, Tag("count")] | Annotated[AbidMetadataBody, Tag("abid")],
    Discriminator(_body_kind),
    Body(
        openapi_examples={
            "count": {"summary": "A recorded count", "value": {"expected_count": 4}},
            "abid": {
                "summary": "An ABID metadata json (metadata/<id>.json)",
                "value": {
                    "EXPECTED_QUANTITY": 2,
                    "BIN_FCSKU_DATA": {
                        "B00CXACR1U": {"asin": "B00CXACR1U", "name": "Optical cable (6')", "quantity": 2}
                    },
                },
            },
        }
    ),
]


def bin_out(bin_: Bin) -> BinOut:
    return BinOut(
        id=bin_.id,
        expected_count=bin_.expected_count,
        source=bin_.source,  # type: ignore[arg-type]
        # scrub: rows stored before the text rules (records/text_rules.py) must still read back.
        items=scrub(bin_.items),
        created_at=bin_.created_at,
        updated_at=bin_.updated_at,
        last_verdict=bin_.last_verdict,  # type: ignore[arg-type]
        last_verdict_check_id=bin_.last_verdict_check_id,
        last_checked_at=bin_.last_checked_at,
    )


def _not_found(exc: LookupError) -> Problem:
    return Problem(404, str(exc))


@router.put(
    "/{bin_id}",
    response_model=BinOut,
    summary="Set a bin's recorded count",
    responses={201: {"model": BinOut, "description": "Created"}, **problem_responses(401, 403, 413, 422)},
)
def put_bin(
    bin_id: BinId,
    body: BinBody,
    response: Response,
    key: Annotated[Principal, Depends(require_scope("inventory"))],
    session: Annotated[Session, Depends(get_db)],
) -> BinOut:
    """Creates or replaces the bin's recorded count: either ``{"expected_count": n}`` or an ABID metadata
    json as published (count from ``EXPECTED_QUANTITY``, items from ``BIN_FCSKU_DATA``).

    Changing the count clears ``last_verdict``, which judged the old count. 201 when the bin is new.
    Needs the ``inventory`` scope.
    """
    if isinstance(body, AbidMetadataBody):
        count, source, items = (
            body.EXPECTED_QUANTITY,
            "abid-metadata",
            bin_records.abid_items(body.BIN_FCSKU_DATA),
        )
    else:
        count, source, items = body.expected_count, "api", None
    for attempt in (1, 2):
        try:
            bin_, created = bin_records.put_bin(session, bin_id, count, source=source, items=items)
            session.commit()
            break
        except sa.exc.IntegrityError:
            # Two first PUTs for one bin raced; the second becomes an update of the first's row.
            session.rollback()
            if attempt == 2:
                raise
    response.status_code = 201 if created else 200
    return bin_out(bin_)


@router.get(
    "/{bin_id}",
    response_model=BinOut,
    summary="A bin's record",
    responses=problem_responses(401, 403, 404, 422),
)
def get_bin(
    bin_id: BinId,
    key: Annotated[Principal, Depends(require_scope("inventory"))],
    session: Annotated[Session, Depends(get_db)],
) -> BinOut:
    """The bin's recorded count, its items and the verdict of its latest check. Needs ``inventory``."""
    try:
        return bin_out(bin_records.require_bin(session, bin_id))
    except bin_records.BinNotFound as exc:
        raise _not_found(exc) from exc


@router.get("", response_model=BinPage, summary="List bins", responses=problem_responses(401, 403, 422))
def list_bins(
    key: Annotated[Principal, Depends(require_scope("inventory"))],
    session: Annotated[Session, Depends(get_db)],
    last_verdict: Annotated[
        Literal["match", "mismatch", "uncertain", "none"] | None,
        Query(description="Only bins whose latest check had this verdict; 'none': not checked since set."),
    ] = None,
    source: Annotated[
        Literal["api", "abid-metadata", "review"] | None, Query(description="Only bins from this source.")
    ] = None,
    after: Annotated[
        str | None,
        Query(pattern=BIN_ID_PATTERN, description="The previous page's next_cursor (a bin id)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
) -> BinPage:
    """Bins ordered by id, with filters; ``GET /v1/bins?last_verdict=mismatch`` lists the bins whose
    latest photo contradicts their recorded count. Needs ``inventory``."""
    page = bin_records.list_bins(session, last_verdict=last_verdict, source=source, after=after, limit=limit)
    return BinPage(items=[bin_out(b) for b in page.items], next_cursor=page.next_cursor)
