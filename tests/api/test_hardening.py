"""The findings of the hostile-client review (issue 10), each held by a test, on SQLite and Postgres.

In-process (TestClient) against a real database: stored text, id ranges, cursors, Allow, nosniff,
duplicate parts, the dataset endpoint allow-list, idempotent retries. The ones that need a real server
(unparsable requests, auth before the body, a killed API) are in test_hardening_http.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from records.db import make_engine
from records.orm import Bin
from tests.api.conftest import Service
from tests.api.support import originals

SURROGATE_BODY = '{"EXPECTED_QUANTITY": 1, "BIN_FCSKU_DATA": {"a": {"n": "\\ud800"}}}'


@pytest.fixture(params=["sqlite", "postgres"])
def svc(
    request: pytest.FixtureRequest, make_service: Callable[..., Service], checkpoints: tuple[Path, Path]
) -> Service:
    overrides = {}
    if request.param == "postgres":
        overrides = {"database_url": request.getfixturevalue("pg_url"), "bootstrap_admin_key": True}
    service = make_service(**overrides)
    registered = service.register(checkpoints[0])
    service.wait_serving(registered.id)
    return service


def photo() -> tuple[str, bytes, str]:
    path = originals(1)[0]
    return (path.name, path.read_bytes(), "image/jpeg")


def problem(response, status: int) -> dict:  # noqa: ANN001
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    return response.json()


def test_text_that_cannot_be_stored_is_refused_and_nothing_is_kept(svc: Service) -> None:
    client, h = svc.client, svc.headers()
    body = problem(
        client.put("/v1/bins/B1", content=SURROGATE_BODY, headers={**h, "Content-Type": "application/json"}),
        422,
    )
    assert "surrogate" in body["detail"] and "BIN_FCSKU_DATA.a.n" in body["detail"]
    problem(client.get("/v1/bins/B1", headers=h), 404)
    nul = {"EXPECTED_QUANTITY": 1, "BIN_FCSKU_DATA": {"a": {"n": "x\u0000y"}}}
    assert "NUL" in problem(client.put("/v1/bins/B1", json=nul, headers=h), 422)["detail"]
    deep: dict = {"x": 1}
    for _ in range(10):
        deep = {"d": deep}
    too_deep = {"EXPECTED_QUANTITY": 1, "BIN_FCSKU_DATA": {"a": deep}}
    assert "nested" in problem(client.put("/v1/bins/B1", json=too_deep, headers=h), 422)["detail"]
    # A float with no fraction is the integer JSON says it is; "1" and true are not counts.
    assert client.put("/v1/bins/B1", json={"expected_count": 2.0}, headers=h).json()["expected_count"] == 2
    problem(client.put("/v1/bins/B1", json={"expected_count": "2"}, headers=h), 422)
    problem(client.put("/v1/bins/B1", json={"expected_count": True}, headers=h), 422)
    # One-line fields: no control characters, no line breaks.
    reason = problem(client.post("/v1/models/1/promote", json={"reason": "ok\u0000"}, headers=h), 422)[
        "detail"
    ]
    assert "NUL" in reason


def test_a_stored_row_with_broken_text_never_breaks_reads(svc: Service) -> None:
    # Rows written before the text rules, or by other tools: the API must still serve them.
    # Both backends store JSON as text, so they take it: the API must still serve it.
    engine = make_engine(svc.settings.resolved_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(Bin).values(
                    id="OLD1",
                    expected_count=1,
                    source="abid-metadata",
                    items=[{"name": "cable \ud800 \u0000end"}],
                )
            )
    finally:
        engine.dispose()
    client, h = svc.client, svc.headers()
    one = client.get("/v1/bins/OLD1", headers=h)
    assert one.status_code == 200, one.text
    assert one.json()["items"] == [{"name": "cable \ufffd end"}]
    listing = client.get("/v1/bins", headers=h)
    assert listing.status_code == 200 and [b["id"] for b in listing.json()["items"]] == ["OLD1"]


def test_ids_and_cursors_out_of_range_are_client_errors(svc: Service) -> None:
    client, h = svc.client, svc.headers()
    client.put("/v1/bins/B2", json={"expected_count": 1}, headers=h)
    for path in (
        "/v1/models/2147483648",
        "/v1/models/9223372036854775808",
        "/v1/models?before=2147483648",
        "/v1/bins/B2/checks/2147483648",
        "/v1/bins/B2/checks/99999999999999999999",
        "/v1/bins/B2/checks/2147483648/image",
        "/v1/bins/B2/checks?before=9223372036854775808",
        "/v1/bins?after=%00",
        "/v1/bins?after=a%00b",
        "/v1/training-jobs?before=%00",
        "/v1/training-jobs/%00",
    ):
        body = problem(client.get(path, headers=h), 422)
        assert body["type"] == "urn:binwatch:problem:validation-error", (path, body)
    # The largest id that can exist is an ordinary 404.
    problem(client.get("/v1/models/2147483647", headers=h), 404)


def test_405_lists_every_method_of_the_path(svc: Service) -> None:
    response = svc.client.delete("/v1/bins/B3", headers=svc.headers())
    problem(response, 405)
    assert set(response.headers["allow"].split(", ")) == {"GET", "PUT"}


def test_photos_are_served_as_their_type_never_sniffed(svc: Service) -> None:
    client, h = svc.client, svc.headers()
    client.put("/v1/bins/B4", json={"expected_count": 1}, headers=h)
    check = client.post("/v1/bins/B4/checks", files={"image": photo()}, headers=h)
    assert check.status_code == 201, check.text
    image = client.get(check.json()["image_url"], headers=h)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in image.headers["content-security-policy"]
    assert client.get("/v1/bins/B4", headers=h).headers["x-content-type-options"] == "nosniff"
    # Every media type a stored photo can have is in the spec.
    spec = client.get("/openapi.json").json()
    served = spec["paths"]["/v1/bins/{bin_id}/checks/{check_id}/image"]["get"]["responses"]["200"]["content"]
    assert {"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff"} <= set(served)


def test_a_check_with_two_image_parts_is_refused(svc: Service) -> None:
    client, h = svc.client, svc.headers()
    client.put("/v1/bins/B5", json={"expected_count": 1}, headers=h)
    two = [("image", photo()), ("image", photo())]
    assert "exactly one" in problem(client.post("/v1/bins/B5/checks", files=two, headers=h), 422)["detail"]
    assert client.get("/v1/bins/B5/checks", headers=h).json()["items"] == []


def test_spec_declares_problem_json_for_422_and_400_for_bodies(svc: Service) -> None:
    spec = svc.client.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            if "422" in responses:
                assert list(responses["422"]["content"]) == ["application/problem+json"], (path, method)
            if "requestBody" in op:
                assert {"400", "413"} <= set(responses), (path, method)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_a_retried_check_with_the_same_key_is_stored_once(svc: Service) -> None:
    client, h = svc.client, svc.headers()
    client.put("/v1/bins/B6", json={"expected_count": 1}, headers=h)
    keyed = {**h, "Idempotency-Key": "check-B6-1"}
    first = client.post("/v1/bins/B6/checks", files={"image": photo()}, headers=keyed)
    again = client.post("/v1/bins/B6/checks", files={"image": photo()}, headers=keyed)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert again.json() == first.json()
    assert len(client.get("/v1/bins/B6/checks", headers=h).json()["items"]) == 1
    # The same key with another request is refused, never answered with the first one's result.
    other = client.post(
        "/v1/bins/B6/checks", files={"image": photo()}, data={"expected_count": "3"}, headers=keyed
    )
    assert problem(other, 422)["type"] == "urn:binwatch:problem:idempotency-key-reused"
    elsewhere = client.post("/v1/bins/B7/checks", files={"image": photo()}, headers=keyed)
    assert problem(elsewhere, 422)["type"] == "urn:binwatch:problem:idempotency-key-reused"
    # Keys are per API key: another client's identical key is its own.
    mine = svc.create_key("inventory", name="other-client")
    theirs = client.post(
        "/v1/bins/B6/checks",
        files={"image": photo()},
        headers={"X-API-Key": mine, "Idempotency-Key": "check-B6-1"},
    )
    assert theirs.status_code == 201 and "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != first.json()["id"]
    problem(
        client.post("/v1/bins/B6/checks", files={"image": photo()}, headers={**h, "Idempotency-Key": "a b"}),
        422,
    )


def test_dataset_endpoints_must_be_on_the_operators_list(make_service: Callable[..., Service]) -> None:
    closed = make_service()
    body = {"dataset": {"uri": "s3://bucket/abid/", "endpoint_url": "http://169.254.169.254/"}}
    response = closed.client.post("/v1/training-jobs", json=body, headers=closed.headers())
    detail = problem(response, 422)["detail"]
    assert "BINWATCH_DATASET_ENDPOINT_ALLOWLIST" in detail and "none are allowed" in detail
    assert closed.client.get("/v1/training-jobs", headers=closed.headers()).json()["items"] == []

    opened = make_service(dataset_endpoint_allowlist=["http://minio:9000"])
    for url in ("http://minio:9000", "http://MINIO:9000/", "http://minio:9000/some/path"):
        ok = opened.client.post(
            "/v1/training-jobs",
            json={
                "dataset": {"uri": "s3://bucket/abid/", "endpoint_url": url},
                "hyperparameters": {"recipe": "smoke"},
            },
            headers=opened.headers(),
        )
        assert ok.status_code == 202, ok.text
    for url in ("http://minio:9001", "https://minio:9000", "http://user:pw@minio:9000", "file:///etc/passwd"):
        refused = opened.client.post(
            "/v1/training-jobs",
            json={"dataset": {"uri": "s3://bucket/abid/", "endpoint_url": url}},
            headers=opened.headers(),
        )
        assert "allowed: http://minio:9000" in problem(refused, 422)["detail"], url


def test_a_retried_job_submission_is_queued_once(make_service: Callable[..., Service]) -> None:
    svc = make_service()
    client, h = svc.client, {**svc.headers(), "Idempotency-Key": "job-1"}
    body = {"dataset": {"uri": "/data/abid", "limit": 50}, "hyperparameters": {"recipe": "smoke"}}
    first = client.post("/v1/training-jobs", json=body, headers=h)
    again = client.post("/v1/training-jobs", json=body, headers=h)
    assert first.status_code == again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert [j["id"] for j in client.get("/v1/training-jobs", headers=h).json()["items"]] == [
        first.json()["id"]
    ]
    changed = client.post("/v1/training-jobs", json={**body, "model_name": "x"}, headers=h)
    assert problem(changed, 422)["type"] == "urn:binwatch:problem:idempotency-key-reused"
    assert json.loads(json.dumps(first.json()))["status"] == "queued"


def test_dataset_folders_can_be_confined(make_service: Callable[..., Service]) -> None:
    svc = make_service(dataset_roots=["/data/abid"])
    h = svc.headers()
    for uri in ("/data/abid", "/data/abid/2026", "/data/abid/x/../y"):
        ok = svc.client.post("/v1/training-jobs", json={"dataset": {"uri": uri}}, headers=h)
        assert ok.status_code == 202, (uri, ok.text)
    for uri in ("/data/abid-other", "/data/abid/../../etc", "/etc", "relative/abid"):
        refused = svc.client.post("/v1/training-jobs", json={"dataset": {"uri": uri}}, headers=h)
        assert "BINWATCH_DATASET_ROOTS" in problem(refused, 422)["detail"] or "absolute" in refused.text, uri
    # Every dataset of a job is confined, the extra ones too, and the error names the one refused.
    for route in ("/v1/training-jobs", "/v1/tuning-jobs"):
        body: dict = {"dataset": {"uri": "/data/abid", "extra_uris": ["/data/abid/more", "/etc/abid"]}}
        if route == "/v1/tuning-jobs":
            body |= {
                "space": {"lr": {"type": "float", "low": 0.0003, "high": 0.01, "log": True}},
                "trials": 2,
            }
        refused = problem(svc.client.post(route, json=body, headers=h), 422)
        assert "/etc/abid is outside the folders" in refused["detail"], route
        assert refused["errors"][0]["loc"] == ["body", "dataset", "extra_uris", 1], route
    both = {"dataset": {"uri": "/data/abid", "extra_uris": ["/data/abid/more"]}}
    accepted = svc.client.post("/v1/training-jobs", json=both, headers=h)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["dataset"]["extra_uris"] == ["/data/abid/more"]


def test_an_s3_uri_that_is_no_bucket_is_a_422_naming_the_field(make_service: Callable[..., Service]) -> None:
    svc = make_service()
    body = {"dataset": {"uri": "s3://user:pw@127.0.0.1:8999/abid/"}}
    refused = problem(svc.client.post("/v1/training-jobs", json=body, headers=svc.headers()), 422)
    assert "'user:pw@127.0.0.1:8999' is not an S3 bucket name" in refused["detail"]
    assert any(e["loc"][:3] == ["body", "dataset", "uri"] for e in refused["errors"]), refused["errors"]
    assert svc.client.get("/v1/training-jobs", headers=svc.headers()).json()["items"] == []
