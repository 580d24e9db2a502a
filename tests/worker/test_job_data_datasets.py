"""worker.job_data with ``dataset.extra_uris``: several real ABID folders joined as `binwatch train A B` joins
them (model/datasets.py), with the deployment's folder limits checked for each."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.abid import DatasetError
from records.job_spec import DatasetSpec
from settings import Settings
from worker.job_data import load_job_data


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, home=tmp_path / "home", **values)  # type: ignore[call-arg]


def test_extra_datasets_train_and_validation_stays_on_the_first(
    tmp_path: Path, abid_root: Path, abid_extra_root: Path
) -> None:
    alone = load_job_data(
        DatasetSpec.model_validate({"uri": str(abid_root), "limit": 80}), settings(tmp_path)
    )
    spec = DatasetSpec.model_validate(
        {"uri": str(abid_root), "extra_uris": [str(abid_extra_root)], "limit": 80}
    )
    data = load_job_data(spec, settings(tmp_path))
    assert [r.id for r in data.val] == [r.id for r in alone.val] and {r.dataset for r in data.val} == {0}
    assert [r.id for r in data.train if r.dataset == 0] == [r.id for r in alone.train]
    assert sum(r.dataset == 1 for r in data.train) == 80  # the subset options apply to each folder
    assert data.source.uri == f"{abid_root} + {abid_extra_root}"
    extra = next(r for r in data.train if r.dataset == 1)
    assert (
        data.source.read_image(extra.id) == (abid_extra_root / "bin-images" / f"{extra.id}.jpg").read_bytes()
    )
    assert (
        "its manifest's val split of" in data.split
        and f"80 more training bins from {abid_extra_root}" in (data.split)
    )


def test_each_folder_is_confined_again_on_the_worker(
    tmp_path: Path, abid_root: Path, abid_extra_root: Path
) -> None:
    spec = DatasetSpec.model_validate({"uri": str(abid_root), "extra_uris": [str(abid_extra_root)]})
    with pytest.raises(DatasetError, match=f"refused: dataset.uri {abid_extra_root} is outside the folders"):
        load_job_data(spec, settings(tmp_path, dataset_roots=[str(abid_root)]))
    missing = DatasetSpec.model_validate({"uri": str(abid_root), "extra_uris": [str(tmp_path / "nowhere")]})
    with pytest.raises(DatasetError, match="does not exist"):
        load_job_data(missing, settings(tmp_path))
