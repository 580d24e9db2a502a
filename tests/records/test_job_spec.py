"""A training job's hyperparameters resolve through the same recipes as `binwatch train`."""

from __future__ import annotations

import json

import pytest

from model.recipes import DEFAULT_RECIPE, RECIPES
from records.job_spec import Hyperparameters, check_dataset_root, check_endpoint, resolve_config


def test_a_job_without_a_recipe_trains_the_default_recipe() -> None:
    config = resolve_config(Hyperparameters())
    assert config["recipe"] == DEFAULT_RECIPE
    for key, value in RECIPES[DEFAULT_RECIPE].items():
        assert config[key] == value
    assert config["device"] == "auto"


def test_job_overrides_win_over_the_recipe() -> None:
    config = resolve_config(Hyperparameters(recipe="smoke", epochs=5, image_size=96))
    assert (config["recipe"], config["epochs"], config["image_size"]) == ("smoke", 5, 96)


def test_an_invalid_combination_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown recipe 'fast'"):
        resolve_config(Hyperparameters(recipe="fast"))


# -- written after a mutation-testing pass (docs/testing.md)


def test_a_configuration_the_trainer_refuses_is_reported_field_by_field() -> None:
    # The API validates Hyperparameters first; this reaches the trainer's own checks with a bad value.
    hp = Hyperparameters.model_construct(recipe="smoke", lr=-1.0, batch_size=0)
    with pytest.raises(ValueError) as caught:
        resolve_config(hp)
    assert str(caught.value) == (
        "invalid training configuration: batch_size: Input should be greater than or equal to 1; "
        "lr: Input should be greater than 0"
    )


def test_the_resolved_configuration_is_json_and_leaves_out_what_is_not_training() -> None:
    hp = Hyperparameters(recipe="smoke", epochs=3, time_limit_seconds=600)
    assert hp.train_config_values() == {"epochs": 3}
    config = resolve_config(hp)
    assert config["device"] == "auto" and config["epochs"] == 3
    # The time limit is the job's, not the trainer's; the recipe is recorded by name, once.
    assert "time_limit_seconds" not in config and config["recipe"] == "smoke"
    assert json.loads(json.dumps(config)) == config  # JSON types only: it is stored in a JSON column


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://minio:9000", True),
        ("HTTP://MINIO:9000/some/path", True),
        ("  http://minio:9000/  ", True),
        ("http://minio:9001", False),
        ("https://minio:9000", False),
        ("http://user:pw@minio:9000", False),
        ("http://user@minio:9000", False),
        ("ftp://minio:9000", False),
        ("http://minio:99999", False),
        ("http:///nohost", False),
    ],
)
def test_an_endpoint_must_name_an_allowed_origin(url: str, ok: bool) -> None:
    allow = ["http://minio:9000/", "not a url", "https://s3.internal:8443"]
    if ok:
        check_endpoint(url, allow)
        return
    with pytest.raises(ValueError) as caught:
        check_endpoint(url, allow)
    assert str(caught.value) == (
        "endpoint_url is not on this deployment's list of dataset endpoints "
        "(BINWATCH_DATASET_ENDPOINT_ALLOWLIST; allowed: http://minio:9000, https://s3.internal:8443)"
    )


def test_default_ports_are_filled_in_and_an_empty_list_allows_none() -> None:
    check_endpoint("https://s3.example.com/", ["https://s3.example.com:443"])
    check_endpoint("http://s3.example.com:80", ["http://S3.example.com"])
    check_endpoint(None, [])
    with pytest.raises(ValueError, match=r"none are allowed on this deployment; leave endpoint_url out\)$"):
        check_endpoint("http://minio:9000", [])


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("/data/abid", None),
        ("/data/abid/", None),
        ("/data/abid/2026/../x", None),
        ("s3://any-bucket/abid", None),
        ("/data/abid-other", "dataset.uri /data/abid-other is outside the folders training jobs may read"),
        ("/data/abid/../../etc", "dataset.uri /etc is outside"),
        ("relative/abid", "dataset.uri must be an absolute path under /data/abid/, /srv on this deployment"),
    ],
)
def test_dataset_folders_are_confined_lexically(uri: str, error: str | None) -> None:
    roots = ["/data/abid/", "/srv"]
    if error is None:
        check_dataset_root(uri, roots)
        return
    with pytest.raises(ValueError) as caught:
        check_dataset_root(uri, roots)
    assert str(caught.value).startswith(error), caught.value
    if "outside" in error:
        assert str(caught.value).endswith("(BINWATCH_DATASET_ROOTS: /data/abid/, /srv)")
    check_dataset_root(uri, [])  # no roots: anything goes


def test_the_root_folder_as_a_root_allows_every_absolute_path() -> None:
    check_dataset_root("/data/abid", ["/"])
    check_dataset_root("/", ["/"])
