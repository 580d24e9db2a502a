"""POST /v1/training-jobs and /v1/tuning-jobs with ``dataset.reviews``: what is accepted, what is refused
(in words that name the fields), and what is stored for the worker. Training on them:
tests/worker/test_job_data_reviews.py and tests/e2e/test_review_training.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tests.api.conftest import Service


def test_reviews_alone_are_a_dataset_pinned_to_the_submission_time(
    make_service: Callable[..., Service],
) -> None:
    # A deployment that limits dataset folders: a job without a folder has nothing to check against it.
    svc = make_service(dataset_roots=["/data"])
    h = svc.headers()
    before = datetime.now(UTC)
    r = svc.client.post("/v1/training-jobs", json={"dataset": {"reviews": {}}}, headers=h)
    assert r.status_code == 202, r.text
    dataset = r.json()["dataset"]
    assert "uri" not in dataset and set(dataset["reviews"]) == {"reviewed_before"}
    pinned = datetime.fromisoformat(dataset["reviews"]["reviewed_before"])
    assert before <= pinned <= datetime.now(UTC) + timedelta(seconds=1)
    shown = svc.client.get(f"/v1/training-jobs/{r.json()['id']}", headers=h).json()
    assert shown["dataset"] == dataset

    # Added to an ABID subset; a time the client chose is kept, normalised to UTC.
    body = {
        "uri": "/data/abid",
        "limit": 60,
        "reviews": {"reviewed_after": "2026-11-01T01:00:00+01:00", "reviewed_before": "2026-11-20T00:00:00Z"},
    }
    r = svc.client.post("/v1/training-jobs", json={"dataset": body}, headers=h)
    assert r.status_code == 202, r.text
    assert r.json()["dataset"] == {
        "uri": "/data/abid",
        "limit": 60,
        "reviews": {"reviewed_after": "2026-11-01T00:00:00Z", "reviewed_before": "2026-11-20T00:00:00Z"},
        "seed": 0,
        "val_fraction": 0.15,
    }
    # The folder limit still holds for a uri next to reviews.
    outside = svc.client.post(
        "/v1/training-jobs", json={"dataset": {"uri": "/etc", "reviews": {}}}, headers=h
    )
    assert outside.status_code == 422 and "BINWATCH_DATASET_ROOTS" in outside.json()["detail"]


def test_a_dataset_without_uri_or_reviews_is_refused_naming_both(
    make_service: Callable[..., Service],
) -> None:
    svc = make_service()
    h = svc.headers()
    cases = [
        ({}, "a dataset needs uri"),
        ({"limit": 10, "reviews": {}}, "limit selects bins of the ABID dataset, and there is no uri"),
        ({"reviews": {"reviewed_after": 1767225600}}, "ISO 8601 text with a time zone"),
        ({"reviews": {"everything": True}}, "Extra inputs are not permitted"),
    ]
    for dataset, words in cases:
        r = svc.client.post("/v1/training-jobs", json={"dataset": dataset}, headers=h)
        assert r.status_code == 422, r.text
        assert words in r.text, r.text
    assert svc.client.get("/v1/training-jobs", headers=h).json()["items"] == []


def test_a_tuning_job_on_reviews_alone_is_accepted_and_pinned(make_service: Callable[..., Service]) -> None:
    svc = make_service()
    body = {
        "dataset": {"reviews": {"limit": 500}},
        "hyperparameters": {"recipe": "smoke"},
        "space": {"lr": {"type": "float", "low": 0.0003, "high": 0.01, "log": True}},
        "trials": 2,
    }
    r = svc.client.post("/v1/tuning-jobs", json=body, headers=svc.headers())
    assert r.status_code == 202, r.text
    reviews = r.json()["dataset"]["reviews"]
    assert reviews["limit"] == 500 and datetime.fromisoformat(reviews["reviewed_before"]) <= datetime.now(UTC)


def test_a_review_window_that_ends_before_it_starts_is_a_422(make_service: Callable[..., Service]) -> None:
    service = make_service()
    body = {"dataset": {"reviews": {"reviewed_after": "2099-01-01T00:00:00Z"}}, "hyperparameters": {}}
    answer = service.client.post("/v1/training-jobs", json=body, headers=service.headers())
    assert answer.status_code == 422
    assert "is not before this submission" in answer.json()["detail"]
