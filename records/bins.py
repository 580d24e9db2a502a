"""Bins and their checks: recorded counts, the history of photo checks, and the inventory queries.

Functions take a Session and flush but never commit: the caller owns the transaction (one request, one
unit of work).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from records.orm import Bin, BinCheck, utcnow
from records.paging import Page

# GET /v1/bins?last_verdict=none lists bins that were never checked (or whose count changed since).
UNCHECKED = "none"


class BinNotFound(LookupError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def abid_items(bin_fcsku_data: Mapping[str, Any] | list[Any] | None) -> list[dict[str, Any]]:
    """ABID's ``BIN_FCSKU_DATA`` (a mapping asin -> item) as the list of items the ``bins`` table keeps."""
    if bin_fcsku_data is None:
        return []
    values = bin_fcsku_data.values() if isinstance(bin_fcsku_data, Mapping) else bin_fcsku_data
    return [dict(item) if isinstance(item, Mapping) else {"value": item} for item in values]


def require_bin(session: Session, bin_id: str) -> Bin:
    bin_ = session.get(Bin, bin_id)
    if bin_ is None:
        raise BinNotFound(f"bin {bin_id!r} has no record; create it with PUT /v1/bins/{bin_id}")
    return bin_


def put_bin(
    session: Session,
    bin_id: str,
    expected_count: int,
    *,
    source: str,
    items: list[dict[str, Any]] | None = None,
) -> tuple[Bin, bool]:
    """Create or replace a bin's recorded count; returns the bin and whether it was created.

    A changed count clears ``last_verdict``: the verdict judged the old count, and keeping it would list
    a corrected bin as a mismatch until its next photo. The comparison happens inside the UPDATE, against
    the row as it is when the write lands, not against an earlier read: a check or another PUT committing
    in between can never leave a verdict of one count on a bin that now records another.
    """
    unchanged = Bin.expected_count == expected_count
    updated = session.execute(
        sa.update(Bin)
        .where(Bin.id == bin_id)
        .values(
            expected_count=expected_count,
            source=source,
            items=items,
            # Set explicitly: a re-sent record still counts as "updated now".
            updated_at=utcnow(),
            last_verdict=sa.case((unchanged, Bin.last_verdict), else_=sa.null()),
            last_verdict_check_id=sa.case((unchanged, Bin.last_verdict_check_id), else_=sa.null()),
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    created = not updated
    if created:
        session.add(Bin(id=bin_id, expected_count=expected_count, source=source, items=items))
    session.flush()
    bin_ = session.get(Bin, bin_id, populate_existing=True)
    assert bin_ is not None
    return bin_, created


def list_bins(
    session: Session,
    *,
    last_verdict: str | None = None,
    source: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> Page[Bin]:
    """Bins ordered by id, ``limit`` at a time; pass the previous page's ``next_cursor`` as ``after``.

    Keyset pagination (``id > after``) stays correct while bins are added between pages, unlike offsets.
    """
    query = sa.select(Bin).order_by(Bin.id).limit(limit + 1)
    if last_verdict == UNCHECKED:
        query = query.where(Bin.last_verdict.is_(None))
    elif last_verdict is not None:
        query = query.where(Bin.last_verdict == last_verdict)
    if source is not None:
        query = query.where(Bin.source == source)
    if after is not None:
        query = query.where(Bin.id > after)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=rows[-1].id if more and rows else None)


def record_check(
    session: Session,
    bin_id: str,
    *,
    image_key: str,
    expected_count: int,
    predicted_count: int,
    predicted_label: str,
    probabilities: dict[str, float],
    probability_of_expected: float | None,
    verdict: str,
    thresholds: dict[str, float],
    model_version_id: int | None,
    score: float | None = None,
    judged_by: str | None = None,
    risk: str | None = None,
) -> tuple[BinCheck, bool]:
    """Store one check; returns it and whether its verdict became the bin's ``last_verdict``.

    It does when the count it judged is the bin's recorded count at the moment the check is written.
    Decided inside the UPDATE (not from the count read before the photo was counted, which a PUT may have
    changed meanwhile), so ``last_verdict`` always judges the count the bin records now.
    Raises ``BinNotFound`` when the bin is gone.
    """
    require_bin(session, bin_id)
    check = BinCheck(
        bin_id=bin_id,
        image_key=image_key,
        expected_count=expected_count,
        predicted_count=predicted_count,
        predicted_label=predicted_label,
        probabilities=probabilities,
        probability_of_expected=probability_of_expected,
        verdict=verdict,
        thresholds=thresholds,
        model_version_id=model_version_id,
        score=score,
        judged_by=judged_by,
        risk=None if risk is None else risk[:500],
    )
    session.add(check)
    session.flush()
    judges = Bin.expected_count == expected_count
    session.execute(
        sa.update(Bin)
        .where(Bin.id == bin_id)
        .values(
            last_checked_at=check.created_at,
            last_verdict=sa.case((judges, verdict), else_=Bin.last_verdict),
            last_verdict_check_id=sa.case((judges, check.id), else_=Bin.last_verdict_check_id),
        )
        .execution_options(synchronize_session=False)
    )
    bin_ = session.get(Bin, bin_id, populate_existing=True)
    if bin_ is None:
        raise BinNotFound(f"bin {bin_id!r} was deleted while its check was stored")
    return check, bin_.last_verdict_check_id == check.id


def list_checks(
    session: Session, bin_id: str, *, before: int | None = None, limit: int = 50
) -> Page[BinCheck]:
    """A bin's checks, newest first; pass ``next_cursor`` as ``before`` for the next page."""
    query = sa.select(BinCheck).where(BinCheck.bin_id == bin_id).order_by(BinCheck.id.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(BinCheck.id < before)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=str(rows[-1].id) if more and rows else None)


def get_check(session: Session, bin_id: str, check_id: int) -> BinCheck | None:
    check = session.get(BinCheck, check_id)
    if check is None or check.bin_id != bin_id:
        return None
    return check
