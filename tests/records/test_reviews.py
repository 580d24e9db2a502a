"""Reviews of checks (records/reviews.py) on Postgres and SQLite: the rules of a review, the latest review
counting while every one is kept, the queue, the examples fixed before a time, the overview figures."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from records import reviews
from records.artifacts import LocalArtifactStore
from records.orm import Bin, utcnow
from tests.records.test_review_dataset import add_check, photo, review


def _checks(s: Session, tmp_path: Path, n: int = 3) -> list[int]:
    store = LocalArtifactStore(tmp_path / "artifacts")
    return [add_check(s, store, f"b{i}", 2, photo("00004")) for i in range(n)]


def test_reviewing_again_adds_a_review_and_the_latest_counts(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions() as s:
        first, second, third = _checks(s, tmp_path)
        review(s, "b0", first, "confirmed")
        review(s, "b0", first, "counted", 4)
        review(s, "b1", second, "unusable")
        s.commit()
        assert reviews.review_of(s, first).outcome == "counted"
        assert [r.outcome for r in reviews.history(s, first)] == ["counted", "confirmed"]
        assert {k: v.outcome for k, v in reviews.reviews_of(s, [first, second, third]).items()} == {
            first: "counted",
            second: "unusable",
        }
        waiting = reviews.queue(s, reviewed=False).items
        assert [i.check.id for i in waiting] == [third]
        done = reviews.queue(s, reviewed=True).items
        assert [(i.check.id, i.review.outcome) for i in done] == [(second, "unusable"), (first, "counted")]
        assert [i.check.id for i in reviews.queue(s, reviewed=None).items] == [third, second, first]
        assert reviews.queue_size(s) == 1
        figures = reviews.overview(s)
        assert figures.reviewed == 2 and figures.unreviewed == 1
        assert figures.checks_per_day[-1] == (utcnow().date().isoformat(), 3)
        assert sum(n for _, n in figures.checks_per_day) == 3


def test_two_sessions_reviewing_one_check_at_once_both_succeed(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions() as s:
        (check,) = _checks(s, tmp_path, 1)
        s.commit()
    # Both write before either commits: no unique index to trip over, the later one counts. (SQLite
    # allows one writer at a time, so there the second waits for the first's commit, as it would.)
    with sessions() as a, sessions() as b:
        review(a, "b0", check, "confirmed")
        if a.get_bind().dialect.name == "sqlite":
            a.commit()
        review(b, "b0", check, "counted", 5)
        a.commit()
        b.commit()
    with sessions() as s:
        assert len(reviews.history(s, check)) == 2
        assert reviews.review_of(s, check).seen_count == 5


def test_examples_before_a_time_stay_fixed_when_checks_are_reviewed_again(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions() as s:
        first, second, _ = _checks(s, tmp_path)
        review(s, "b0", first, "counted", 3)
        review(s, "b1", second, "confirmed")
        s.commit()
        pinned = utcnow() + timedelta(microseconds=1)
        before = [(e.check_id, e.count) for e in reviews.reviewed_examples(s, reviewed_before=pinned)]
        assert before == [(first, 3), (second, 2)]
        # Later: one becomes unusable, the other is counted again. A job pinned before sees neither change.
        review(s, "b0", first, "unusable")
        review(s, "b1", second, "counted", 7)
        s.commit()
        assert [(e.check_id, e.count) for e in reviews.reviewed_examples(s, reviewed_before=pinned)] == before
        assert [(e.check_id, e.count) for e in reviews.reviewed_examples(s)] == [(second, 7)]


@pytest.mark.parametrize(
    ("outcome", "seen", "correct", "message"),
    [
        ("counted", None, False, "needs seen_count"),
        ("unusable", 3, False, "has no seen_count"),
        ("confirmed", 9, False, "review it as 'counted'"),
        ("confirmed", None, True, "only a 'counted' review can correct"),
        ("counted", -1, False, "between 0 and"),
        ("sideways", None, False, "outcome must be one of"),
    ],
)
def test_an_inconsistent_review_says_what_to_fix_and_stores_nothing(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    outcome: str,
    seen: int | None,
    correct: bool,
    message: str,
) -> None:
    with sessions() as s:
        (check,) = _checks(s, tmp_path, 1)
        with pytest.raises(ValueError, match=message):
            reviews.review_check(
                s, "b0", check, outcome=outcome, seen_count=seen, reviewer="t", correct_record=correct
            )
        assert reviews.history(s, check) == []
        with pytest.raises(reviews.CheckNotFound, match="has no check"):
            reviews.review_check(s, "b1", check, outcome="confirmed", seen_count=None, reviewer="t")


def test_a_counted_review_corrects_the_record_only_when_asked_and_different(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions() as s:
        (check,) = _checks(s, tmp_path, 1)
        same = reviews.review_check(
            s, "b0", check, outcome="counted", seen_count=2, reviewer="t", correct_record=True
        )
        assert same.corrected_record is False and s.get(Bin, "b0").source == "api"
        changed = reviews.review_check(
            s, "b0", check, outcome="counted", seen_count=6, reviewer="t", correct_record=True
        )
        bin_ = s.get(Bin, "b0", populate_existing=True)
        assert changed.corrected_record and changed.recorded_count == 2
        assert (bin_.expected_count, bin_.source, bin_.last_verdict) == (6, "review", None)
