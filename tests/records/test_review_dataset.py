"""Reviewed checks as training examples (records/review_dataset.py), on Postgres and SQLite.

Real check rows and reviews written by records/bins.py and records/reviews.py, real ABID photos stored in
a real local artifact folder.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from model.abid import DatasetError, LocalSource, MissingObjectError
from model.preprocess import load_rgb
from records import bins as bin_records
from records import reviews
from records.artifacts import LocalArtifactStore
from records.job_spec import ReviewsSpec
from records.orm_console import CheckReview
from records.review_dataset import ReviewedPhotos, as_records, load_examples
from tests.conftest import ABID


def photo(abid_id: str, fmt: str = "JPEG") -> bytes:
    """A real ABID photo, re-encoded when ``fmt`` is not JPEG (checks store uploads as they came)."""
    data = (ABID / "bin-images" / f"{abid_id}.jpg").read_bytes()
    if fmt == "JPEG":
        return data
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).save(out, fmt)
    return out.getvalue()


def add_check(
    session: Session, store: LocalArtifactStore, bin_id: str, recorded: int, data: bytes, ext: str = "jpg"
) -> int:
    """A bin recording ``recorded`` objects and one check of ``data``, stored as the API stores it."""
    bin_records.put_bin(session, bin_id, recorded, source="api")
    key = f"checks/{bin_id}/{len(store.list('checks/'))}.{ext}"
    store.put_bytes(key, data)
    check, _ = bin_records.record_check(
        session,
        bin_id,
        image_key=key,
        expected_count=recorded,
        predicted_count=recorded + 2,
        predicted_label=str(recorded + 2),
        probabilities={str(recorded + 2): 0.9, str(recorded): 0.01},
        probability_of_expected=0.01,
        verdict="mismatch",
        thresholds={"match": 0.35, "mismatch": 0.05},
        model_version_id=None,
    )
    return check.id


def review(session: Session, bin_id: str, check_id: int, outcome: str, seen: int | None = None) -> None:
    reviews.review_check(session, bin_id, check_id, outcome=outcome, seen_count=seen, reviewer="test")


def test_examples_carry_the_count_a_person_gave_and_leave_out_unusable_photos(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    with sessions() as s:
        confirmed = add_check(s, store, "00004", 3, photo("00004"))
        counted = add_check(s, store, "00005", 2, photo("00005"))
        unusable = add_check(s, store, "00006", 4, photo("00006"))
        add_check(s, store, "00010", 1, photo("00010"))  # never reviewed
        review(s, "00004", confirmed, "confirmed")
        review(s, "00005", counted, "counted", 5)
        review(s, "00006", unusable, "unusable")
        s.commit()
        examples = load_examples(s, ReviewsSpec())
    # confirmed: the recorded count the check judged; counted: what the person saw; oldest review first.
    assert [(e.check_id, e.bin_id, e.count) for e in examples] == [
        (confirmed, "00004", 3),
        (counted, "00005", 5),
    ]
    assert [(r.id, r.count, r.split) for r in as_records(examples)] == [
        (f"review-{confirmed}", 3, None),
        (f"review-{counted}", 5, None),
    ]

    # A second review replaces the first: the photo marked unusable now leaves the examples.
    with sessions() as s:
        review(s, "00004", confirmed, "unusable")
        s.commit()
        assert [e.check_id for e in load_examples(s, ReviewsSpec())] == [counted]


def test_reviewed_after_before_and_limit_pick_the_window_and_the_most_recent(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    ids = []
    with sessions() as s:
        for i, bin_id in enumerate(["00004", "00005", "00006", "00010"]):
            check_id = add_check(s, store, bin_id, i, photo(bin_id))
            review(s, bin_id, check_id, "confirmed")
            ids.append(check_id)
        # Reviews a day apart (in another order than the checks), so the window is exact.
        for day, check_id in enumerate([ids[2], ids[0], ids[3], ids[1]]):
            s.execute(
                sa.update(CheckReview)
                .where(CheckReview.check_id == check_id)
                .values(reviewed_at=start + timedelta(days=day))
            )
        s.commit()

        def chosen(**spec: object) -> list[int]:
            return [e.check_id for e in load_examples(s, ReviewsSpec.model_validate(spec))]

        in_review_order = [ids[2], ids[0], ids[3], ids[1]]
        assert chosen() == in_review_order
        # Strictly after / before: a review at the boundary itself is out.
        assert chosen(reviewed_after="2026-11-02T00:00:00Z") == in_review_order[2:]
        assert chosen(reviewed_before="2026-11-02T00:00:00Z") == in_review_order[:1]
        # Another time zone names the same instant.
        assert chosen(reviewed_after="2026-11-02T01:00:00+01:00") == in_review_order[2:]
        # limit: the most recently reviewed, still listed oldest first; within the window when there is one.
        assert chosen(limit=2) == in_review_order[2:]
        assert chosen(limit=2, reviewed_before="2026-11-03T12:00:00Z") == in_review_order[1:3]
        assert chosen(limit=10) == in_review_order
        assert chosen(reviewed_after="2026-12-01T00:00:00Z") == []


def test_the_source_serves_the_stored_photos_and_hands_other_ids_to_the_abid_source(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    png, webp = photo("00004", "PNG"), photo("00005", "WEBP")
    with sessions() as s:
        first = add_check(s, store, "00004", 3, png, "png")
        second = add_check(s, store, "00005", 2, webp, "webp")
        review(s, "00004", first, "confirmed")
        review(s, "00005", second, "counted", 4)
        s.commit()
        examples = load_examples(s, ReviewsSpec())

    abid = LocalSource(ABID)
    both = ReviewedPhotos(store, examples, abid)
    assert both.read_image(f"review-{first}") == png and both.read_image(f"review-{second}") == webp
    # Uploads come in any format the API accepts; the trainer's decoder reads them all.
    for data in (png, webp):
        assert load_rgb(data, 64).mode == "RGB"
    assert both.read_image("00004") == abid.read_image("00004")
    assert both.read_metadata(f"review-{second}")["EXPECTED_QUANTITY"] == 4
    assert both.read_metadata("00004") == abid.read_metadata("00004")
    assert both.read_manifest() == abid.read_manifest()
    assert both.uri == f"{abid.uri} + reviewed checks"

    alone = ReviewedPhotos(store, examples)
    assert alone.uri == "reviewed checks" and alone.read_manifest() is None
    assert alone.list_ids() == [f"review-{first}", f"review-{second}"]
    with pytest.raises(MissingObjectError, match="has no dataset uri"):
        alone.read_image("00004")
    with pytest.raises(MissingObjectError, match="not one of this job's reviewed checks"):
        alone.read_image("review-999999")

    # A photo gone from the store: the error names the check and what to do about it.
    store.delete(examples[0].image_key)
    with pytest.raises(DatasetError, match=f"photo of check {first} \\(bin 00004\\).*'unusable'"):
        alone.read_image(f"review-{first}")
