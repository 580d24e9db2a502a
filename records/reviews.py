"""People's reviews of checks: the mismatch queue, a review, and the reviewed examples training reads.

A review says what a person sees in a check's photo:

- ``confirmed``: the bin holds its recorded count (the count the check judged); the model was wrong.
- ``counted``: the person counted ``seen_count`` objects (the record, the model, or both were wrong).
- ``unusable``: the photo cannot be counted (blurred, dark, the wrong bin); it never becomes training data.

With ``correct_record`` a ``counted`` review also sets the bin's recorded count to ``seen_count`` in the
same transaction (source ``review``), which, as any changed count does, clears the bin's last verdict.
Every review is kept (an append-only history); a check's review is its latest one. Reviewing again adds
a row, so two people saving a review of one check at once both succeed (the later wins) and a training
job pinned to a time keeps seeing the reviews made before it. Functions flush, never commit: the caller
owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from records import bins as bin_records
from records.orm import Bin, BinCheck, utcnow
from records.orm_console import REVIEW_OUTCOMES, CheckReview
from records.paging import Page

ReviewOutcome = Literal["confirmed", "counted", "unusable"]
# The verdicts a person is asked to look at.
QUEUE_VERDICTS = ("mismatch", "uncertain")
MAX_SEEN_COUNT = 10_000


class CheckNotFound(LookupError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class QueueItem:
    check: BinCheck
    review: CheckReview | None


def _seen_count(check: BinCheck, outcome: str, seen_count: int | None) -> int | None:
    if outcome not in REVIEW_OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(REVIEW_OUTCOMES)}, not {outcome!r}")
    if outcome == "confirmed":
        if seen_count is not None and seen_count != check.expected_count:
            raise ValueError(
                f"a confirmation means the bin holds its recorded {check.expected_count}; to say you see "
                f"{seen_count}, review it as 'counted'"
            )
        return check.expected_count
    if outcome == "counted":
        if seen_count is None:
            raise ValueError("a 'counted' review needs seen_count: the number of objects you see")
        if not 0 <= seen_count <= MAX_SEEN_COUNT:
            raise ValueError(f"seen_count must be between 0 and {MAX_SEEN_COUNT}, not {seen_count}")
        return seen_count
    if seen_count is not None:
        raise ValueError("an 'unusable' review has no seen_count: leave it out")
    return None


def review_check(
    session: Session,
    bin_id: str,
    check_id: int,
    *,
    outcome: str,
    seen_count: int | None,
    reviewer: str,
    correct_record: bool = False,
) -> CheckReview:
    """Store a review of one check (replacing an earlier one) and, if asked, correct the bin's record.

    Raises CheckNotFound for an unknown check, ValueError (with what to fix) for an inconsistent review.
    """
    check = session.get(BinCheck, check_id)
    if check is None or check.bin_id != bin_id:
        raise CheckNotFound(f"bin {bin_id!r} has no check {check_id}")
    count = _seen_count(check, outcome, seen_count)
    if correct_record and outcome != "counted":
        raise ValueError(
            "correct_record needs outcome 'counted': only a 'counted' review can correct the bin's record "
            "(it needs the count you saw)"
        )
    bin_ = bin_records.require_bin(session, bin_id)
    recorded = bin_.expected_count
    corrected = bool(correct_record and count != recorded)
    review = CheckReview(
        check_id=check_id,
        bin_id=bin_id,
        outcome=outcome,
        seen_count=count,
        recorded_count=recorded,
        corrected_record=corrected,
        reviewer=reviewer[:200],
        reviewed_at=utcnow(),
    )
    session.add(review)
    if corrected:
        assert count is not None
        bin_records.put_bin(session, bin_id, count, source="review", items=bin_.items)
    session.flush()
    return review


def _latest(*window: sa.ColumnElement[bool]) -> sa.Subquery:
    """Each reviewed check's latest review (``check_id``, ``review_id``), among the reviews in ``window``."""
    return (
        sa.select(CheckReview.check_id, sa.func.max(CheckReview.id).label("review_id"))
        .where(*window)
        .group_by(CheckReview.check_id)
        .subquery()
    )


def review_of(session: Session, check_id: int) -> CheckReview | None:
    """The check's current review: its latest."""
    query = (
        sa.select(CheckReview)
        .where(CheckReview.check_id == check_id)
        .order_by(CheckReview.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def history(session: Session, check_id: int) -> list[CheckReview]:
    """Every review of the check, newest first."""
    query = sa.select(CheckReview).where(CheckReview.check_id == check_id).order_by(CheckReview.id.desc())
    return list(session.scalars(query))


def reviews_of(session: Session, check_ids: list[int]) -> dict[int, CheckReview]:
    """The current review of each of these checks that has one."""
    if not check_ids:
        return {}
    latest = _latest(CheckReview.check_id.in_(check_ids))
    rows = session.scalars(sa.select(CheckReview).join(latest, CheckReview.id == latest.c.review_id))
    return {row.check_id: row for row in rows}


def queue(
    session: Session,
    *,
    verdicts: tuple[str, ...] = QUEUE_VERDICTS,
    reviewed: bool | None = False,
    bin_id: str | None = None,
    before: int | None = None,
    limit: int = 20,
) -> Page[QueueItem]:
    """Checks with these verdicts, newest first; ``reviewed`` False: only unreviewed, True: only reviewed,
    None: both. Pass ``next_cursor`` back as ``before`` for the next page."""
    latest = _latest()
    query = (
        sa.select(BinCheck, CheckReview)
        .outerjoin(latest, latest.c.check_id == BinCheck.id)
        .outerjoin(CheckReview, CheckReview.id == latest.c.review_id)
        .where(BinCheck.verdict.in_(verdicts))
        .order_by(BinCheck.id.desc())
        .limit(limit + 1)
    )
    if reviewed is False:
        query = query.where(latest.c.review_id.is_(None))
    elif reviewed is True:
        query = query.where(latest.c.review_id.is_not(None))
    if bin_id:
        query = query.where(BinCheck.bin_id == bin_id)
    if before is not None:
        query = query.where(BinCheck.id < before)
    rows = [QueueItem(check, review) for check, review in session.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=str(rows[-1].check.id) if more and rows else None)


def queue_size(session: Session, verdicts: tuple[str, ...] = QUEUE_VERDICTS) -> int:
    """How many checks with these verdicts nobody has reviewed yet."""
    latest = _latest()
    query = (
        sa.select(sa.func.count())
        .select_from(BinCheck)
        .outerjoin(latest, latest.c.check_id == BinCheck.id)
        .where(BinCheck.verdict.in_(verdicts), latest.c.review_id.is_(None))
    )
    return int(session.scalar(query) or 0)


@dataclass(frozen=True)
class ReviewedExample:
    """A reviewed photo and the count a person gave it: one training example."""

    check_id: int
    bin_id: str
    image_key: str
    count: int


def reviewed_examples(
    session: Session,
    *,
    reviewed_after: datetime | None = None,
    reviewed_before: datetime | None = None,
    limit: int | None = None,
) -> list[ReviewedExample]:
    """The reviewed checks whose latest review in the window (after / before the given times) has a
    count (not 'unusable'), oldest review first (stable for a seed). ``limit`` keeps the most recently
    reviewed ones: the newest reviews are the photos most like what the cameras see now.

    Reviews are never changed, so the examples before a time are fixed: a check reviewed again later
    keeps the count of its review from before (a job pinned to its submission sees the same photos)."""
    window = []
    if reviewed_after is not None:
        window.append(CheckReview.reviewed_at > reviewed_after)
    if reviewed_before is not None:
        window.append(CheckReview.reviewed_at < reviewed_before)
    latest = _latest(*window)
    newest_first = (CheckReview.reviewed_at.desc(), CheckReview.check_id.desc())
    query = (
        sa.select(CheckReview.check_id, CheckReview.bin_id, BinCheck.image_key, CheckReview.seen_count)
        .join(latest, CheckReview.id == latest.c.review_id)
        .join(BinCheck, BinCheck.id == CheckReview.check_id)
        .where(CheckReview.seen_count.is_not(None))
        .order_by(*newest_first)
    )
    if limit is not None:
        query = query.limit(limit)
    rows = [ReviewedExample(c, b, k, int(n)) for c, b, k, n in session.execute(query)]
    rows.reverse()
    return rows


@dataclass(frozen=True)
class Overview:
    bins_by_verdict: dict[str, int]  # "match", "mismatch", "uncertain", "none"
    checks_per_day: list[tuple[str, int]]  # (YYYY-MM-DD, checks), oldest first, days without checks as 0
    unreviewed: int
    reviewed: int


def overview(session: Session, days: int = 14) -> Overview:
    """The inventory figures of the console's overview page."""
    by_verdict = dict.fromkeys(("match", "mismatch", "uncertain", "none"), 0)
    for verdict, n in session.execute(
        sa.select(Bin.last_verdict, sa.func.count()).group_by(Bin.last_verdict)
    ):
        by_verdict[verdict or "none"] = int(n)
    today = utcnow().date()
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=utcnow().tzinfo)
    per_day = dict.fromkeys(((first + timedelta(days=i)).isoformat() for i in range(days)), 0)
    column: sa.ColumnElement[datetime] = BinCheck.created_at
    if session.get_bind().dialect.name == "postgresql":
        # timestamptz to a date follows the connection's time zone; the days are UTC days.
        column = sa.func.timezone("UTC", column)
    day = sa.func.date(column)
    query = sa.select(day, sa.func.count()).where(BinCheck.created_at >= since).group_by(day)
    for value, n in session.execute(query):
        key = value if isinstance(value, str) else value.isoformat()
        if key in per_day:
            per_day[key] = int(n)
    reviewed = int(session.scalar(sa.select(sa.func.count(sa.distinct(CheckReview.check_id)))) or 0)
    return Overview(by_verdict, list(per_day.items()), queue_size(session), reviewed)
