"""Overload and storage failures answer with a problem and lose nothing: a full inference queue (503 with
Retry-After, none of the request queued) and a check the database refuses (its photo removed again); the
service keeps serving after both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Service
from tests.api.support import originals

pytestmark = pytest.mark.slow


def test_a_full_queue_answers_503_and_loses_nothing(
    make_service: Callable[..., Service], checkpoints: tuple[Path, Path]
) -> None:
    svc = make_service(batch_queue_size=2)
    svc.wait_serving(svc.register(checkpoints[0]).id)
    photos = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in originals(3)]

    # Three images can never fit a queue of two: all or none of a request's images are queued.
    refused = svc.client.post("/v1/predictions", headers=svc.headers(), files=photos)
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    body = refused.json()
    assert body["type"].endswith("overloaded") and body["status"] == 503
    assert "the inference queue is full" in body["detail"] and "limit 2" in body["detail"]
    assert "retry shortly" in body["detail"]
    # Nothing of the refused request is left waiting, and the service goes on answering.
    metrics = svc.client.get("/metrics").text
    assert "binwatch_inference_queue_depth 0.0" in metrics, metrics
    served = svc.client.post("/v1/predictions", headers=svc.headers(), files=photos[:2])
    assert served.status_code == 200, served.text
    assert len(served.json()["predictions"]) == 2


def test_a_check_the_database_refuses_leaves_no_photo_behind(service: Service, abid_root: Path) -> None:
    import sqlalchemy as sa

    from records.artifacts import LocalArtifactStore
    from records.db import make_engine

    c, h = service.client, service.headers()
    photo = originals(1)[0]
    bin_id = photo.stem
    assert c.put(f"/v1/bins/{bin_id}", headers=h, json={"expected_count": 3}).status_code in (200, 201)
    store = LocalArtifactStore(service.settings.resolved_artifact_store)
    assert store.list("checks/") == []
    # A real refusal by the database at the moment the check row is written (a trigger), after the
    # photo is already in the store.
    engine = make_engine(service.settings.resolved_database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TRIGGER refuse_checks BEFORE INSERT ON bin_checks "
                "BEGIN SELECT RAISE(ABORT, 'checks are refused by this test'); END"
            )
        )
    # A client that sees the 500 as a user would, instead of the server's exception re-raised in the test.
    user = TestClient(c.app, raise_server_exceptions=False)
    try:
        refused = user.post(
            f"/v1/bins/{bin_id}/checks",
            headers=h,
            files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
        )
        assert refused.status_code == 500, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert store.list("checks/") == [], "the photo of a check that was not stored must not stay"
        assert c.get(f"/v1/bins/{bin_id}/checks", headers=h).json()["items"] == []
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER refuse_checks"))
        engine.dispose()
    stored = c.post(
        f"/v1/bins/{bin_id}/checks",
        headers=h,
        files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
    )
    assert stored.status_code == 201, stored.text
    assert len(store.list("checks/")) == 1
