"""The HTTP API in-process (TestClient, full lifespan) on the embedded default: SQLite + artifact folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from records.artifacts import LocalArtifactStore
from tests.api.conftest import Service
from tests.api.support import originals

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"


def photo(i: int = 0) -> tuple[str, bytes, str]:
    path = originals(i + 1)[i]
    return path.name, path.read_bytes(), "image/jpeg"


def abid_metadata(abid_root: Path, bin_id: str) -> dict:
    return json.loads((abid_root / "metadata" / f"{bin_id}.json").read_text())


def assert_problem(response, status: int, *fragments: str) -> dict:  # noqa: ANN001
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    for fragment in fragments:
        assert fragment in body["detail"], body["detail"]
    return body


# -- no model ----------------------------------------------------------------------------------------


def test_without_a_model_predictions_answer_503_saying_how_to_get_one(
    make_service: Callable[..., Service],
) -> None:
    svc = make_service()
    assert svc.client.get("/healthz").json() == {"status": "alive"}
    ready = assert_problem(svc.client.get("/readyz"), 503, "binwatch models register", "--promote")
    assert ready["database"] == "ok"
    body = assert_problem(
        svc.client.post("/v1/predictions", headers=svc.headers(), files={"images": photo()}),
        503,
        "no model version is active",
        "binwatch models register",
    )
    assert body["type"] == "urn:binwatch:problem:no-active-model"


# -- predictions -------------------------------------------------------------------------------------


def test_predictions_for_several_full_size_photos(service: Service) -> None:
    files = [("images", photo(i)) for i in range(3)]
    response = service.client.post("/v1/predictions", headers=service.headers(), files=files)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["filename"] for p in predictions] == [f[1][0] for f in files]
    for p in predictions:
        assert set(p["probabilities"]) == {"0", "1", "2", "3", "4", "5", "6+"}
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert p["confidence"] == pytest.approx(max(p["probabilities"].values()))
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
        assert p["is_overflow"] == (p["label"] == "6+")
        assert p["count"] == (6 if p["is_overflow"] else int(p["label"]))
        assert p["model"]["id"] == 1
    # one request's images went through one batch
    metrics = service.client.get("/metrics").text
    assert "binwatch_inference_batch_size_count 1.0" in metrics
    assert "binwatch_inference_batch_size_sum 3.0" in metrics
    assert 'binwatch_http_requests_total{method="POST",route="/v1/predictions",status="200"} 1.0' in metrics


def test_predictions_need_the_predict_scope(service: Service) -> None:
    inventory = service.create_key("inventory")
    predict = service.create_key("predict")
    assert_problem(
        service.client.post("/v1/predictions", headers=service.headers(inventory), files={"images": photo()}),
        403,
        "needs 'predict'",
    )
    ok = service.client.post(
        "/v1/predictions", headers={"Authorization": f"Bearer {predict}"}, files={"images": photo()}
    )
    assert ok.status_code == 200, ok.text


def test_too_many_images_in_one_request(make_service: Callable[..., Service], checkpoints) -> None:  # noqa: ANN001
    svc = make_service(max_images_per_request=2)
    svc.wait_serving(svc.register(checkpoints[0]).id)
    files = [("images", photo(0))] * 3
    assert_problem(svc.client.post("/v1/predictions", headers=svc.headers(), files=files), 413, "at most 2")


# -- bins and checks ---------------------------------------------------------------------------------


def test_bins_from_abid_metadata_and_plain_counts(service: Service, abid_root: Path) -> None:
    c, h = service.client, service.headers()
    meta = abid_metadata(abid_root, "00011")
    created = c.put("/v1/bins/00011", headers=h, json=meta)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["expected_count"] == meta["EXPECTED_QUANTITY"] and body["source"] == "abid-metadata"
    assert sorted(i["asin"] for i in body["items"]) == sorted(meta["BIN_FCSKU_DATA"])
    assert body["last_verdict"] is None

    again = c.put("/v1/bins/00011", headers=h, json={"expected_count": 3})
    assert again.status_code == 200 and again.json()["source"] == "api" and again.json()["items"] is None
    assert again.json()["updated_at"] > body["updated_at"]
    assert c.get("/v1/bins/00011", headers=h).json()["expected_count"] == 3
    # "00011" and "11" are different bins
    assert_problem(c.get("/v1/bins/11", headers=h), 404, "PUT /v1/bins/11")


def test_bin_listing_filters_and_paginates(service: Service) -> None:
    c, h = service.client, service.headers()
    for i in range(5):
        assert c.put(f"/v1/bins/b{i}", headers=h, json={"expected_count": i}).status_code == 201
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"after": cursor} if cursor else {})}
        page = c.get("/v1/bins", headers=h, params=params).json()
        seen += [b["id"] for b in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"b{i}" for i in range(5)]
    assert [b["id"] for b in c.get("/v1/bins?last_verdict=none", headers=h).json()["items"]] == seen
    assert c.get("/v1/bins?last_verdict=mismatch", headers=h).json()["items"] == []
    assert_problem(c.get("/v1/bins?last_verdict=bad", headers=h), 422, "last_verdict")
    assert_problem(c.get("/v1/bins?limit=0", headers=h), 422, "limit")


def test_checks_judge_the_recorded_count_and_are_stored(service: Service, abid_root: Path) -> None:
    c, h = service.client, service.headers()
    name, data, ctype = photo(0)
    bin_id = name.removesuffix(".jpg")
    c.put(f"/v1/bins/{bin_id}", headers=h, json=abid_metadata(abid_root, bin_id))

    created = c.post(f"/v1/bins/{bin_id}/checks", headers=h, files={"image": (name, data, ctype)})
    assert created.status_code == 201, created.text
    check = created.json()
    recorded = abid_metadata(abid_root, bin_id)["EXPECTED_QUANTITY"]
    expected_label = "6+" if recorded >= 6 else str(recorded)
    assert check["expected_count"] == recorded and check["expected_label"] == expected_label
    assert check["expected_count_source"] == "record"
    p = check["probabilities"][expected_label]
    assert check["probability_of_expected"] == pytest.approx(p)
    # Judged by the neighbour ratio at the serving version's own operating points (measured on its val split
    # when it was trained), which the models API shows as the version's verdict rule.
    rule = c.get("/v1/models/1", headers=h).json()["verdict_rule"]
    points = c.get("/v1/models/1", headers=h).json()["operating_points"]["scores"]["neighbour_ratio"]
    assert rule["source"] == "model" and rule["score"] == check["judged_by"] == "neighbour_ratio"
    assert check["thresholds"] == {"match": rule["match"], "mismatch": rule["mismatch"]}
    assert rule["match"] == points["match"] and rule["mismatch"] == points["mismatch"]["5%"]["threshold"]
    labels = list(check["probabilities"])
    index = labels.index(expected_label)
    neighbours = [check["probabilities"][labels[j]] for j in (index - 1, index + 1) if 0 <= j < len(labels)]
    score = p / max(neighbours)
    assert check["score"] == pytest.approx(score)
    match, mismatch = rule["match"], rule["mismatch"]
    expected = "match" if score >= match else "mismatch" if score < mismatch else "uncertain"
    assert check["verdict"] == expected
    assert check["model"]["id"] == check["model_version_id"] == 1
    assert f"P({recorded}" in check["reason"] and "its likelier neighbour" in check["reason"]
    assert check["risk"] == rule["risk"] and "correct record" in check["risk"]

    # the bin remembers the verdict, the photo is stored byte for byte, the history lists the check
    assert c.get(f"/v1/bins/{bin_id}", headers=h).json()["last_verdict"] == check["verdict"]
    image = c.get(check["image_url"], headers=h)
    assert (
        image.status_code == 200 and image.content == data and image.headers["content-type"] == "image/jpeg"
    )
    history = c.get(f"/v1/bins/{bin_id}/checks", headers=h).json()
    assert [x["id"] for x in history["items"]] == [check["id"]]
    listed = history["items"][0]
    for field in (
        "verdict",
        "probability_of_expected",
        "predicted_label",
        "expected_label",
        "image_url",
        "score",
        "judged_by",
        "risk",
    ):
        assert listed[field] == check[field], field
    assert c.get(f"/v1/bins/{bin_id}/checks/{check['id']}", headers=h).json() == listed
    store = LocalArtifactStore(service.settings.resolved_artifact_store)
    [photo_key] = store.list(f"checks/{bin_id}/")

    # A photo gone from the store (deleted by hand, a lifecycle rule) is a 404 that says so; the check stays.
    store.delete(photo_key)
    assert_problem(
        c.get(check["image_url"], headers=h), 404, f"check {check['id']}", "no longer in the artifact store"
    )
    assert c.get(f"/v1/bins/{bin_id}/checks/{check['id']}", headers=h).json() == listed
    store.put_bytes(photo_key, data)

    # filter on the verdict
    listed_ids = [
        b["id"] for b in c.get(f"/v1/bins?last_verdict={check['verdict']}", headers=h).json()["items"]
    ]
    assert listed_ids == [bin_id]

    # correcting the count clears the stale verdict
    c.put(f"/v1/bins/{bin_id}", headers=h, json={"expected_count": recorded + 1})
    assert c.get(f"/v1/bins/{bin_id}", headers=h).json()["last_verdict"] is None


def test_the_deployments_thresholds_and_a_version_without_points_are_judged_as_they_say(
    make_service: Callable[..., Service], checkpoints: tuple[Path, Path], tmp_path: Path
) -> None:
    from model.checkpoint import load_payload, save_checkpoint

    name, data, ctype = photo(0)
    files = {"image": (name, data, ctype)}

    # Explicit thresholds override the version's points, on the chosen score, and say they are unmeasured.
    svc = make_service(match_threshold=0.3, mismatch_threshold=0.2, verdict_score="probability")
    svc.wait_serving(svc.register(checkpoints[0]).id)
    c, h = svc.client, svc.headers()
    c.put("/v1/bins/b1", headers=h, json={"expected_count": 3})
    check = c.post("/v1/bins/b1/checks", headers=h, files=files).json()
    assert check["thresholds"] == {"match": 0.3, "mismatch": 0.2} and check["judged_by"] == "probability"
    assert check["score"] == check["probability_of_expected"]
    assert "set by this deployment" in check["risk"] and "not measured" in check["risk"]
    assert c.get("/v1/models/1", headers=h).json()["verdict_rule"]["source"] == "settings"

    # A checkpoint without operating points (trained before binwatch stored them) keeps the old rule.
    payload = load_payload(checkpoints[1])
    old = tmp_path / "old" / "best.pt"
    old.parent.mkdir()
    metadata = {k: v for k, v in payload["metadata"].items() if k != "operating_points"}
    save_checkpoint(old, payload["state_dict"], metadata)
    svc = make_service()
    version = svc.register(old)
    svc.wait_serving(version.id)
    c, h = svc.client, svc.headers()
    c.put("/v1/bins/b1", headers=h, json={"expected_count": 3})
    check = c.post("/v1/bins/b1/checks", headers=h, files=files).json()
    assert check["thresholds"] == {"match": 0.35, "mismatch": 0.05} and check["judged_by"] == "probability"
    assert check["reason"].startswith("P(3) = ")
    assert "no measured operating points" in check["risk"]
    detail = c.get(f"/v1/models/{version.id}", headers=h).json()
    assert detail["operating_points"] is None and detail["verdict_rule"]["source"] == "legacy"


def test_an_expected_count_override_is_judged_but_does_not_relabel_the_bin(service: Service) -> None:
    c, h = service.client, service.headers()
    c.put("/v1/bins/b1", headers=h, json={"expected_count": 2})
    first = c.post("/v1/bins/b1/checks", headers=h, files={"image": photo(1)}).json()
    override = c.post(
        "/v1/bins/b1/checks", headers=h, files={"image": photo(1)}, data={"expected_count": "40"}
    )
    assert override.status_code == 201, override.text
    body = override.json()
    assert body["expected_count"] == 40 and body["expected_label"] == "6+"
    assert body["expected_count_source"] == "request"
    assert c.get("/v1/bins/b1", headers=h).json()["last_verdict"] == first["verdict"]
    history = c.get("/v1/bins/b1/checks?limit=1", headers=h).json()
    assert [x["id"] for x in history["items"]] == [body["id"]] and history["next_cursor"] == str(body["id"])
    older = c.get(f"/v1/bins/b1/checks?before={history['next_cursor']}", headers=h).json()
    assert [x["id"] for x in older["items"]] == [first["id"]] and older["next_cursor"] is None


def test_checks_on_unknown_bins_and_bad_ids(service: Service) -> None:
    c, h = service.client, service.headers()
    assert_problem(
        c.post("/v1/bins/nope/checks", headers=h, files={"image": photo()}), 404, "PUT /v1/bins/nope"
    )
    assert_problem(c.get("/v1/bins/nope/checks", headers=h), 404)
    c.put("/v1/bins/b1", headers=h, json={"expected_count": 1})
    assert_problem(c.get("/v1/bins/b1/checks/999", headers=h), 404, "no check 999")
    assert_problem(c.get("/v1/bins/b1/checks/999/image", headers=h), 404)
    # ids that could escape the artifact folder are not bin ids
    for bad in ("..", ".hidden", "a%2Fb", "x" * 129):
        response = c.put(f"/v1/bins/{bad}", headers=h, json={"expected_count": 1})
        assert response.status_code in (404, 422), (bad, response.text)
        assert response.headers["content-type"] == PROBLEM


# -- model registry ----------------------------------------------------------------------------------


def test_model_registry_lists_details_and_promotes(service: Service, checkpoints) -> None:  # noqa: ANN001
    c, h = service.client, service.headers()
    second = service.register(checkpoints[1], promote=False, name="seed2")
    again = service.register(checkpoints[1], promote=False)
    assert again.id == second.id and not again.created

    listing = c.get("/v1/models", headers=h).json()["items"]
    assert [m["id"] for m in listing] == [second.id, 1]
    assert [m["is_active"] for m in listing] == [False, True]
    assert listing[1]["serving"] and not listing[0]["serving"]
    assert {"accuracy", "rmse"} <= set(listing[1]["metrics"])

    detail = c.get(f"/v1/models/{second.id}", headers=h).json()
    assert detail["classes"][-1] == "6+" and detail["preprocessing"]["image_size"] == 64
    assert set(detail["plots"]) == {"confusion_matrix", "training_curves"}
    assert "confusion" in detail["metrics"] and detail["promotions"] == []
    assert_problem(c.get("/v1/models/999", headers=h), 404, "no model version with id 999")

    # promotion needs admin
    inventory = service.create_key("inventory", "predict", name="ops")
    assert_problem(
        c.post(f"/v1/models/{second.id}/promote", headers=service.headers(inventory)), 403, "admin"
    )
    assert_problem(c.post("/v1/models/999/promote", headers=h), 404)

    promoted = c.post(f"/v1/models/{second.id}/promote", headers=h, json={"reason": "seed 2 is better"})
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert body["changed"] and body["model"]["is_active"] and body["model"]["serving"]
    assert body["model"]["promotions"][-1]["reason"] == "seed 2 is better"
    assert body["model"]["promotions"][-1]["actor"].startswith("api-key:bootstrap-admin")
    # this process serves it as the response arrives
    prediction = c.post("/v1/predictions", headers=h, files={"images": photo()}).json()["predictions"][0]
    assert prediction["model"]["id"] == second.id
    assert [m["is_active"] for m in c.get("/v1/models", headers=h).json()["items"]] == [True, False]
    # A promotion brings the version's own operating points: checks now mean what seed 2 measured.
    c.put("/v1/bins/b1", headers=h, json={"expected_count": 2})
    name, data, ctype = photo(0)
    check = c.post("/v1/bins/b1/checks", headers=h, files={"image": (name, data, ctype)}).json()
    points = c.get(f"/v1/models/{second.id}", headers=h).json()["operating_points"]["scores"]
    first_points = c.get("/v1/models/1", headers=h).json()["operating_points"]["scores"]
    assert check["model_version_id"] == second.id
    mine = points["neighbour_ratio"]
    assert check["thresholds"] == {"match": mine["match"], "mismatch": mine["mismatch"]["5%"]["threshold"]}
    assert first_points != points
    again_promoted = c.post(f"/v1/models/{second.id}/promote", headers=h).json()
    assert again_promoted["changed"] is False and len(again_promoted["model"]["promotions"]) == 1


def test_a_checkpoint_that_cannot_load_is_not_promoted(service: Service, checkpoints) -> None:  # noqa: ANN001
    c, h = service.client, service.headers()
    second = service.register(checkpoints[1], promote=False)
    store = LocalArtifactStore(service.settings.resolved_artifact_store)
    key = f"models/{second.sha256}/model.pt"
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(key, bytes(data))

    body = assert_problem(
        c.post(f"/v1/models/{second.id}/promote", headers=h), 409, "cannot be loaded", "sha256"
    )
    assert body["type"] == "urn:binwatch:problem:model-unloadable"
    models = {m["id"]: m for m in c.get("/v1/models", headers=h).json()["items"]}
    assert models[1]["is_active"] and models[1]["serving"] and not models[second.id]["is_active"]
    assert c.post("/v1/predictions", headers=h, files={"images": photo()}).status_code == 200


# -- auth and the error shape ------------------------------------------------------------------------


def test_missing_invalid_revoked_and_insufficient_keys(service: Service) -> None:
    from records import apikeys
    from records.db import make_engine, make_session_factory, session_scope

    c = service.client
    body = assert_problem(c.get("/v1/bins"), 401, "missing API key")
    assert body["type"] == "urn:binwatch:problem:unauthenticated"
    assert c.get("/v1/bins").headers["www-authenticate"] == "Bearer"
    assert_problem(c.get("/v1/bins", headers={"X-API-Key": "bw_not-a-key"}), 401, "invalid or revoked")
    assert_problem(c.get("/v1/bins", headers={"Authorization": "Bearer nope"}), 401, "invalid or revoked")
    assert_problem(c.get("/v1/bins", headers={"Authorization": "Basic dXNlcjpwdw=="}), 401, "missing API key")
    predict_only = service.create_key("predict", name="cam")
    assert_problem(
        c.get("/v1/bins", headers=service.headers(predict_only)), 403, "'cam'", "needs 'inventory'"
    )
    assert c.get("/v1/models", headers=service.headers(predict_only)).status_code == 200

    engine = make_engine(service.settings.resolved_database_url)
    with session_scope(make_session_factory(engine)) as session:
        apikeys.revoke_api_key(session, predict_only[:11])
    engine.dispose()
    # Keys seen valid are cached for BINWATCH_API_KEY_CACHE_SECONDS (5 s): revocation lands within that.
    import time

    revoked_by = time.monotonic() + service.settings.api_key_cache_seconds + 1
    while c.get("/v1/models", headers=service.headers(predict_only)).status_code == 200:
        assert time.monotonic() < revoked_by, "a revoked key still works after the cache time"
        time.sleep(0.2)
    assert_problem(c.get("/v1/models", headers=service.headers(predict_only)), 401, "revoked")


def test_every_error_is_a_problem_document(service: Service) -> None:
    c, h = service.client, service.headers()
    assert_problem(c.get("/nowhere"), 404, "no endpoint at /nowhere")
    assert_problem(c.delete("/v1/models", headers=h), 405, "DELETE is not allowed")
    assert_problem(
        c.put("/v1/bins/b1", headers={**h, "content-type": "application/json"}, content=b"{not json"),
        422,
        "JSON decode error",
    )
    assert_problem(c.put("/v1/bins/b1", headers=h, json={"expected_count": 1, "extra": 2}), 422, "extra")
    assert_problem(c.put("/v1/bins/b1", headers=h, json=[1, 2]), 422)
    assert_problem(
        c.post("/v1/predictions", headers={**h, "content-type": "multipart/form-data"}, content=b"garbage"),
        400,
    )


def test_openapi_documents_every_operation_with_examples_and_problems(service: Service) -> None:
    spec = service.client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/predictions",
        "/v1/bins",
        "/v1/bins/{bin_id}",
        "/v1/bins/{bin_id}/checks",
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/models/{model_id}/promote",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    schemes = spec["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key" and schemes["HTTPBearer"]["scheme"] == "bearer"
    # Links lead from a bin to its checks and from a check to its photo and review, to real operations.
    ids = {op["operationId"] for ops in paths.values() for op in ops.values()}
    for status in ("200", "201"):
        bin_links = paths["/v1/bins/{bin_id}"]["put"]["responses"][status]["links"]
        assert bin_links["CheckThisBin"]["parameters"] == {"bin_id": "$response.body#/id"}
    check_links = paths["/v1/bins/{bin_id}/checks"]["post"]["responses"]["201"]["links"]
    assert set(check_links) == {"ThisCheck", "ItsPhoto", "ReviewIt"}
    assert {link["operationId"] for link in (*bin_links.values(), *check_links.values())} <= ids
    for path, operations in paths.items():
        for method, op in operations.items():
            assert op.get("summary") and op.get("description"), (method, path)
            if path.startswith("/v1/"):
                assert "401" in op["responses"], (method, path)
                problem = op["responses"]["401"]["content"]["application/problem+json"]
                assert problem["example"]["status"] == 401
                assert op.get("security"), (method, path)
    schemas = spec["components"]["schemas"]
    for name in ("Prediction", "BinOut", "CheckOut", "ModelOut", "ProblemDetails", "BinCountBody"):
        assert schemas[name].get("examples"), name
    put_body = paths["/v1/bins/{bin_id}"]["put"]["requestBody"]["content"]["application/json"]
    assert set(put_body["examples"]) == {"count", "abid"}
    upload = paths["/v1/predictions"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
