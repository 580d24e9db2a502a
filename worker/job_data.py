"""A job's bins, loaded and split as ``binwatch train`` does, after the deployment's limits are checked.

A job trains on an ABID-layout dataset (``dataset.uri``), on the photos people reviewed in the console
(``dataset.reviews``, records/review_dataset.py), or on both: the reviewed photos get a stratified
train/val split of their own (they are in no manifest) and are added to the ABID bins' train and val.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from model.abid import BinRecord, DatasetError, Source, load_records, open_source
from model.datasets import combine
from model.subsets import SubsetSpec, select, split_records
from records import review_dataset
from records.job_spec import DatasetSpec, ReviewsSpec, check_dataset_root, check_endpoint
from settings import Settings

log = logging.getLogger(__name__)

NO_REVIEWS = (
    "no reviewed checks with a count yet: review some in the console or "
    "POST /v1/bins/{id}/checks/{id}/review (confirmed or counted; unusable photos are never used)"
)


@dataclass
class JobData:
    source: Source
    train: list[BinRecord]
    val: list[BinRecord]
    # The validation split in words, for the promotion decision: how many bins, how split, and how many
    # of them are reviewed photos.
    split: str
    # Reviewed photos used, {"train": n, "val": m}; empty when the job has no ``reviews``.
    reviewed: dict[str, int] = field(default_factory=dict)


@dataclass
class _Part:
    records: list[BinRecord]
    train: list[BinRecord]
    val: list[BinRecord]
    how: str  # how val was split, in words


def load_job_data(spec: DatasetSpec, settings: Settings | None = None) -> JobData:
    """The job's bins, split as ``binwatch train`` splits them; DatasetError/ValueError if unusable.

    The deployment's limits are checked again here, before any connection is opened: the row may have
    been stored before the operator narrowed them, or by something other than the API.
    """
    settings = settings or Settings()
    try:
        check_endpoint(spec.endpoint_url, settings.dataset_endpoint_allowlist)
        for _loc, uri in spec.locations():
            check_dataset_root(uri, settings.dataset_roots)
    except ValueError as exc:
        raise DatasetError(f"refused: {exc}") from exc
    abid: _Part | None = None
    source: Source | None = None
    if spec.uri is not None:
        source, abid = _load_abid(spec, spec.uri, settings)
        if spec.extra_uris:
            source, abid = _add_datasets(spec, source, abid, settings)
    if spec.reviews is None:
        assert source is not None and abid is not None  # DatasetSpec needs a uri or reviews
        split = f"this job's validation split ({len(abid.val)} bins, {abid.how})"
        return JobData(source, abid.train, abid.val, split)

    photos, reviewed = _load_reviewed(spec.reviews, spec, settings, source)
    if abid is not None:
        clash = next((r.id for r in abid.records if review_dataset.is_review_id(r.id)), None)
        if clash is not None:
            raise DatasetError(
                f"{spec.uri} has a bin {clash!r}, an id reserved for reviewed checks: rename it, or train "
                "on the two separately"
            )
    elif not reviewed.train or not reviewed.val:
        raise DatasetError(_too_few(len(reviewed.records), spec.val_fraction, reviewed.val == []))
    train = (abid.train if abid else []) + reviewed.train
    val = (abid.val if abid else []) + reviewed.val
    photos_part = f"{len(reviewed.val)} reviewed photos, {reviewed.how}"
    if abid is None:
        split = f"this job's validation split ({photos_part})"
    else:
        abid_part = f"{len(abid.val)} ABID, {abid.how}"
        split = f"this job's validation split ({len(val)} bins: {abid_part}, and {photos_part})"
    counts = {"train": len(reviewed.train), "val": len(reviewed.val)}
    log.info(
        "dataset: %s; %d reviewed photos (%d train, %d val)%s",
        photos.uri,
        len(reviewed.records),
        counts["train"],
        counts["val"],
        f" added to {len(abid.records)} ABID bins" if abid else "",
    )
    return JobData(photos, train, val, split, counts)


def _load_abid(spec: DatasetSpec, uri: str, settings: Settings, split: bool = True) -> tuple[Source, _Part]:
    # No endpoint of its own: the deployment's S3 endpoint (if any) serves s3:// datasets as well.
    source = open_source(uri, endpoint_url=spec.endpoint_url or settings.s3_endpoint_url)
    source.probe()
    records = load_records(source)
    if spec.ids is not None:
        wanted = set(spec.ids)
        records = [r for r in records if r.id in wanted]
    records = select(
        records, SubsetSpec(spec.min_count, spec.max_count, None, None, None, spec.limit, spec.seed)
    )
    if not records:
        raise DatasetError(f"no bins in {uri} match the subset options")
    if not split:  # an extra dataset: model/datasets.py decides what its bins are for
        return source, _Part(records, records, [], "not split")
    train, val = split_records(records, spec.val_fraction, spec.seed)
    if not train or not val:
        raise DatasetError(
            f"{len(records)} bins selected from {uri}: too few for a training and a validation split"
        )
    manifest_split = bool(val) and all(r.split == "val" for r in val)
    how = "its manifest's val split" if manifest_split else f"a stratified {spec.val_fraction:.0%} split"
    return source, _Part(records, train, val, how)


def _add_datasets(spec: DatasetSpec, first: Source, part: _Part, settings: Settings) -> tuple[Source, _Part]:
    """``extra_uris`` joined to the first dataset as ``binwatch train A B`` joins them (model/datasets.py):
    all their bins train, validation stays the first one's."""
    parts: list[tuple[Source, list[BinRecord]]] = [(first, part.records)]
    for uri in spec.extra_uris or []:
        source, extra = _load_abid(spec, uri, settings, split=False)
        parts.append((source, extra.records))
    combined = combine(parts, spec.val_fraction, spec.seed, "first")
    records = [r for _, recs in parts for r in recs]
    how = f"{part.how} of {spec.uri}; {len(combined.train) - len(part.train)} more training bins from " + (
        ", ".join(spec.extra_uris or [])
    )
    log.info("dataset: %s", how)
    return combined.source, _Part(records, combined.train, combined.val, how)


def _load_reviewed(
    reviews: ReviewsSpec, spec: DatasetSpec, settings: Settings, base: Source | None
) -> tuple[review_dataset.ReviewedPhotos, _Part]:
    """The reviewed examples, read from the deployment's database, their photos from its artifact store."""
    from records.artifacts import open_artifact_store
    from records.db import make_engine, make_session_factory, session_scope

    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            examples = review_dataset.load_examples(session, reviews)
    finally:
        # The source outlives this call and goes into DataLoader processes: it holds no connection.
        engine.dispose()
    if not examples:
        window = [
            f"{word} {moment.isoformat()}"
            for word, moment in (("after", reviews.reviewed_after), ("before", reviews.reviewed_before))
            if moment is not None
        ]
        raise DatasetError(
            NO_REVIEWS + (f" (looked for reviews made {' and '.join(window)})" if window else "")
        )
    store = open_artifact_store(
        settings.resolved_artifact_store, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    records = review_dataset.as_records(examples)
    # Never the manifest's split (they have none): stratified by count, like an ABID folder without one.
    train, val = split_records(records, spec.val_fraction, spec.seed)
    part = _Part(records, train, val, f"a stratified {spec.val_fraction:.0%} split")
    return review_dataset.ReviewedPhotos(store, examples, base), part


def _too_few(n: int, val_fraction: float, no_val: bool) -> str:
    message = f"{n} reviewed photos: too few for a training and a validation split"
    if no_val:
        # The split is stratified by count: a count with k photos gives round(k * val_fraction) of them
        # to validation, and Python rounds 0.5 down to 0.
        need = math.floor(0.5 / val_fraction) + 1
        message += (
            f" (the split is stratified by count, and a count needs {need} reviewed photos to give one to "
            f"validation at val_fraction {val_fraction})"
        )
    return message + "; review more checks, or add an ABID dataset (uri)"
