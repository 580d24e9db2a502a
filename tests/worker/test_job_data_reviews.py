"""worker.job_data with ``dataset.reviews``: reviewed checks become training and validation examples, alone
or added to an ABID subset, on Postgres and SQLite.

Real check rows and reviews (records/bins.py, records/reviews.py), real ABID photos in a real local
artifact folder, the real ABID folder; the examples are decoded by the trainer's own dataset class.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from model.abid import BinRecord, DatasetError, LocalSource, Source, load_records
from model.classes import CountClasses
from model.data import BinImages
from model.preprocess import Preprocessing
from records import bins as bin_records
from records import reviews
from records.artifacts import LocalArtifactStore, open_artifact_store
from records.db import make_engine, make_session_factory, session_scope
from records.job_spec import DatasetSpec
from records.migrate import upgrade_database
from settings import Settings
from tests.conftest import ABID
from worker.job_data import load_job_data


@dataclass
class Deployment:
    settings: Settings
    store: LocalArtifactStore

    def check_and_review(
        self, abid_id: str, recorded: int, outcome: str, seen: int | None = None, fmt: str = "JPEG"
    ) -> int:
        """Bin ``abid_id`` recording ``recorded``, checked with its real ABID photo, then reviewed."""
        data = (ABID / "bin-images" / f"{abid_id}.jpg").read_bytes()
        if fmt != "JPEG":  # the API stores uploads in the format they came in
            out = io.BytesIO()
            Image.open(io.BytesIO(data)).save(out, fmt)
            data = out.getvalue()
        key = f"checks/{abid_id}/photo.{fmt.lower()}"
        self.store.put_bytes(key, data)
        engine = make_engine(self.settings.resolved_database_url)
        try:
            with session_scope(make_session_factory(engine)) as session:
                bin_records.put_bin(session, abid_id, recorded, source="api")
                check, _ = bin_records.record_check(
                    session,
                    abid_id,
                    image_key=key,
                    expected_count=recorded,
                    predicted_count=0,
                    predicted_label="0",
                    probabilities={"0": 0.95, str(recorded): 0.01},
                    probability_of_expected=0.01,
                    verdict="mismatch",
                    thresholds={"match": 0.35, "mismatch": 0.05},
                    model_version_id=None,
                )
                reviews.review_check(
                    session, abid_id, check.id, outcome=outcome, seen_count=seen, reviewer="test"
                )
                return check.id
        finally:
            engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    if request.param == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
    else:
        url = f"sqlite:///{tmp_path / 'state' / 'binwatch.db'}"
    upgrade_database(url)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=url, artifact_store=str(tmp_path / "artifacts"), home=tmp_path / "home"
    )
    store = open_artifact_store(settings.resolved_artifact_store)
    assert isinstance(store, LocalArtifactStore)
    yield Deployment(settings, store)


def abid_ids(n: int) -> list[str]:
    """The first ``n`` bins of the ABID manifest, for check photos."""
    return [r.id for r in load_records(LocalSource(ABID))[:n]]


def review_twelve(dep: Deployment) -> dict[str, int]:
    """Twelve reviewed photos plus one unusable: 8 confirmed at 2 objects, 4 counted as 5 (two as PNG).
    Returns {example id: count}."""
    counts: dict[str, int] = {}
    ids = abid_ids(13)
    for abid_id in ids[:8]:
        counts[f"review-{dep.check_and_review(abid_id, 2, 'confirmed')}"] = 2
    for i, abid_id in enumerate(ids[8:12]):
        fmt = "PNG" if i < 2 else "JPEG"
        counts[f"review-{dep.check_and_review(abid_id, 1, 'counted', 5, fmt=fmt)}"] = 5
    dep.check_and_review(ids[12], 3, "unusable")
    return counts


def decode_all(source: Source, records: list[BinRecord], size: int = 32) -> int:
    """Decode every record through the trainer's dataset class; how many it served."""
    images = BinImages(source, records, CountClasses.overflow_at(12), Preprocessing(image_size=size))
    for i in range(len(images)):
        image, _target, _count = images[i]
        assert tuple(image.shape) == (3, size, size)
    return len(images)


def test_reviews_alone_are_split_by_count_and_served_from_the_artifact_store(deployment: Deployment) -> None:
    counts = review_twelve(deployment)
    data = load_job_data(DatasetSpec.model_validate({"reviews": {}}), deployment.settings)
    used = data.train + data.val
    assert {r.id: r.count for r in used} == counts  # the unusable photo is not among them
    assert len(data.val) == 2 and {r.count for r in data.val} == {2, 5}  # one of each count (15%)
    assert data.reviewed == {"train": 10, "val": 2}
    assert data.split == "this job's validation split (2 reviewed photos, a stratified 15% split)"
    assert data.source.uri == "reviewed checks"
    assert decode_all(data.source, used) == 12

    # The same spec, loaded again (another process of the job, a resumption): the same split.
    again = load_job_data(DatasetSpec.model_validate({"reviews": {}}), deployment.settings)
    assert (again.train, again.val) == (data.train, data.val)


def test_reviews_are_added_to_the_abid_subset_which_the_subset_options_choose(deployment: Deployment) -> None:
    review_twelve(deployment)
    abid_only = load_job_data(
        DatasetSpec.model_validate({"uri": str(ABID), "limit": 60}), deployment.settings
    )
    assert abid_only.reviewed == {}
    data = load_job_data(
        DatasetSpec.model_validate({"uri": str(ABID), "limit": 60, "reviews": {}}), deployment.settings
    )
    # The ABID part is exactly what the subset options select (limit 60 applies to it alone), and the
    # reviewed photos come on top, with their own split.
    assert [r for r in data.train if not r.id.startswith("review-")] == abid_only.train
    assert [r for r in data.val if not r.id.startswith("review-")] == abid_only.val
    assert len(abid_only.train) + len(abid_only.val) == 60
    assert data.reviewed == {"train": 10, "val": 2}
    assert len(data.train) == len(abid_only.train) + 10 and len(data.val) == len(abid_only.val) + 2
    assert data.split == (
        f"this job's validation split ({len(abid_only.val) + 2} bins: {len(abid_only.val)} ABID, its "
        "manifest's val split, and 2 reviewed photos, a stratified 15% split)"
    )
    assert data.source.uri == f"{ABID} + reviewed checks"
    # Both kinds are served by the one source the trainer gets.
    assert decode_all(data.source, data.val) == len(data.val)


def test_no_reviews_yet_or_too_few_is_a_dataset_error_saying_what_to_do(deployment: Deployment) -> None:
    reviews_alone = DatasetSpec.model_validate({"reviews": {}})
    with_abid = DatasetSpec.model_validate({"uri": str(ABID), "limit": 60, "reviews": {}})
    for spec in (reviews_alone, with_abid):
        with pytest.raises(
            DatasetError, match="no reviewed checks with a count yet: review some in the console"
        ):
            load_job_data(spec, deployment.settings)

    ids = abid_ids(4)
    deployment.check_and_review(ids[0], 3, "unusable")
    with pytest.raises(DatasetError, match="no reviewed checks with a count yet"):
        load_job_data(reviews_alone, deployment.settings)

    # Three photos, three counts: the stratified split gives validation none of them.
    for abid_id, count in zip(ids[1:], (1, 2, 3), strict=True):
        deployment.check_and_review(abid_id, count, "confirmed")
    with pytest.raises(DatasetError) as caught:
        load_job_data(reviews_alone, deployment.settings)
    assert str(caught.value) == (
        "3 reviewed photos: too few for a training and a validation split (the split is stratified by "
        "count, and a count needs 4 reviewed photos to give one to validation at val_fraction 0.15); "
        "review more checks, or add an ABID dataset (uri)"
    )
    # Next to an ABID subset they are enough: they all train, the ABID bins validate.
    data = load_job_data(with_abid, deployment.settings)
    assert data.reviewed == {"train": 3, "val": 0}

    window = DatasetSpec.model_validate({"reviews": {"reviewed_after": "2099-01-01T00:00:00Z"}})
    with pytest.raises(DatasetError, match=r"\(looked for reviews made after 2099-01-01T00:00:00\+00:00\)"):
        load_job_data(window, deployment.settings)
