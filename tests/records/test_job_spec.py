"""A training job's hyperparameters resolve through the same recipes as `binwatch train`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from model.recipes import DEFAULT_RECIPE, RECIPES
from records.job_spec import (
    DatasetSpec,
    Hyperparameters,
    ReviewsSpec,
    check_dataset_root,
    check_endpoint,
    resolve_config,
)


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


# -- datasets of reviewed photos (records/review_dataset.py)


def test_a_dataset_needs_a_uri_or_reviews_and_says_so() -> None:
    for empty in ({}, {"uri": None, "reviews": None}, {"seed": 3}):
        with pytest.raises(ValidationError) as caught:
            DatasetSpec.model_validate(empty)
        message = str(caught.value)
        assert "a dataset needs uri" in message and "reviews" in message and "or both" in message


def test_reviews_alone_or_added_to_an_abid_dataset() -> None:
    alone = DatasetSpec.model_validate({"reviews": {}})
    assert alone.uri is None and alone.reviews == ReviewsSpec()
    assert alone.stored() == {"reviews": {}, "seed": 0, "val_fraction": 0.15}
    both = DatasetSpec.model_validate({"uri": "/data/abid", "limit": 60, "reviews": {"limit": 500}})
    assert both.limit == 60 and both.reviews is not None and both.reviews.limit == 500
    assert DatasetSpec.model_validate({"uri": "/data/abid"}).reviews is None


def test_the_abid_subset_options_need_a_uri() -> None:
    with pytest.raises(ValidationError) as caught:
        DatasetSpec.model_validate({"reviews": {}, "limit": 10, "min_count": 1})
    assert "min_count, limit select bins of the ABID dataset, and there is no uri" in str(caught.value)
    assert "reviews.limit caps reviewed photos" in str(caught.value)


@pytest.mark.parametrize(
    "reviews",
    [
        {"limit": 0},
        {"limit": "10"},
        {"limit": True},
        {"since": "2026-11-01T00:00:00Z"},
        {"reviewed_after": 1767225600},
        {"reviewed_after": True},
        {"reviewed_after": "2026-11-01T00:00:00"},  # no time zone: which 00:00?
        {"reviewed_after": "yesterday"},
        {"reviewed_after": "0001-01-01T00:00:00+14:00"},  # before the first instant there is
        {"reviewed_after": "2026-11-02T00:00:00Z", "reviewed_before": "2026-11-01T00:00:00Z"},
    ],
)
def test_reviews_options_are_strict(reviews: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DatasetSpec.model_validate({"reviews": reviews})
    with pytest.raises(ValidationError):
        DatasetSpec.model_validate({"uri": "/data/abid", "reviews": reviews})


def test_review_times_are_iso_text_normalised_to_utc_both_ways() -> None:
    spec = DatasetSpec.model_validate({"reviews": {"reviewed_after": "2026-11-01T01:00:00+01:00"}})
    assert spec.reviews is not None and spec.reviews.reviewed_after == datetime(2026, 11, 1, tzinfo=UTC)
    stored = spec.stored()
    assert stored["reviews"] == {"reviewed_after": "2026-11-01T00:00:00Z"}
    # The worker reads the stored JSON back into an equal spec.
    assert DatasetSpec.model_validate(json.loads(json.dumps(stored))) == spec


def test_pinning_fixes_the_reviews_at_submission_unless_the_client_chose_a_time() -> None:
    now = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    pinned = DatasetSpec.model_validate({"reviews": {}}).pinned(now)
    assert pinned.reviews is not None and pinned.reviews.reviewed_before == now
    chosen = DatasetSpec.model_validate({"reviews": {"reviewed_before": "2026-11-01T00:00:00Z"}}).pinned(now)
    assert chosen.reviews is not None and chosen.reviews.reviewed_before == datetime(2026, 11, 1, tzinfo=UTC)
    abid = DatasetSpec.model_validate({"uri": "/data/abid"})
    assert abid.pinned(now) == abid


# -- several ABID datasets (issue 22): uri first, then extra_uris


def test_extra_datasets_come_after_the_first_and_are_checked_like_it() -> None:
    spec = DatasetSpec.model_validate({"uri": "/data/abid", "extra_uris": ["/data/extra", "s3://bkt/abid/"]})
    assert spec.locations() == [
        (["uri"], "/data/abid"),
        (["extra_uris", 0], "/data/extra"),
        (["extra_uris", 1], "s3://bkt/abid/"),
    ]
    assert spec.stored()["extra_uris"] == ["/data/extra", "s3://bkt/abid/"]
    assert DatasetSpec.model_validate({"reviews": {}}).locations() == []
    for bad, message in (
        ({"uri": "/a", "extra_uris": ["https://x/abid"]}, "use a folder path or an s3://bucket/prefix URI"),
        ({"uri": "/a", "extra_uris": ["/b", "/b"]}, "a dataset is listed twice in extra_uris"),
        ({"uri": "/a", "extra_uris": ["/a"]}, "/a is both uri and one of extra_uris"),
        ({"uri": "/a", "extra_uris": []}, "at least 1 item"),
        ({"uri": "/a", "extra_uris": [f"/d{i}" for i in range(9)]}, "at most 8 items"),
        (
            {"reviews": {}, "extra_uris": ["/b"]},
            "extra_uris selects bins of the ABID dataset, and there is no uri",
        ),
    ):
        with pytest.raises(ValidationError, match=message):
            DatasetSpec.model_validate(bad)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://user:pw@127.0.0.1:8999/abid/",
        "s3://127.0.0.1/abid/",
        "s3://My-Bucket/abid/",
        "s3://ab/abid/",
        "s3://a..b/abid/",
        "s3://-abid/",
        "s3:///abid/",
        "s3://" + "a" * 64 + "/abid/",
    ],
)
def test_s3_uris_are_checked_against_the_bucket_name_rules_at_the_edge(uri: str) -> None:
    for body in ({"uri": uri}, {"uri": "/data/abid", "extra_uris": [uri]}):
        with pytest.raises(ValidationError, match="is not an S3 bucket name") as caught:
            DatasetSpec.model_validate(body)
        assert "endpoint_url" in str(caught.value)
    for fine in ("s3://aft-vbi-pds/", "s3://my.bucket-2/abid/x", "s3://abc"):
        assert DatasetSpec.model_validate({"uri": fine}).uri == fine
