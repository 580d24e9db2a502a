"""A job's bins, loaded and split as ``binwatch train`` does, after the deployment's limits are checked."""

from __future__ import annotations

from dataclasses import dataclass

from model.abid import BinRecord, DatasetError, Source, load_records, open_source
from model.subsets import SubsetSpec, select, split_records
from records.job_spec import DatasetSpec, check_dataset_root, check_endpoint
from settings import Settings


@dataclass
class JobData:
    source: Source
    train: list[BinRecord]
    val: list[BinRecord]
    split: str  # the validation split in words, for the promotion decision


def load_job_data(spec: DatasetSpec, settings: Settings | None = None) -> JobData:
    """The job's bins, split as ``binwatch train`` splits them; DatasetError/ValueError if unusable.

    The deployment's limits are checked again here, before any connection is opened: the row may have
    been stored before the operator narrowed them, or by something other than the API.
    """
    settings = settings or Settings()
    try:
        check_endpoint(spec.endpoint_url, settings.dataset_endpoint_allowlist)
        check_dataset_root(spec.uri, settings.dataset_roots)
    except ValueError as exc:
        raise DatasetError(f"refused: {exc}") from exc
    # No endpoint of its own: the deployment's S3 endpoint (if any) serves s3:// datasets as well.
    source = open_source(spec.uri, endpoint_url=spec.endpoint_url or settings.s3_endpoint_url)
    source.probe()
    records = load_records(source)
    if spec.ids is not None:
        wanted = set(spec.ids)
        records = [r for r in records if r.id in wanted]
    records = select(
        records, SubsetSpec(spec.min_count, spec.max_count, None, None, None, spec.limit, spec.seed)
    )
    if not records:
        raise DatasetError(f"no bins in {spec.uri} match the subset options")
    train, val = split_records(records, spec.val_fraction, spec.seed)
    if not train or not val:
        raise DatasetError(
            f"{len(records)} bins selected from {spec.uri}: too few for a training and a validation split"
        )
    manifest_split = bool(val) and all(r.split == "val" for r in val)
    where = "its manifest's val split" if manifest_split else f"a stratified {spec.val_fraction:.0%} split"
    return JobData(source, train, val, f"this job's validation split ({len(val)} bins, {where})")
