"""The inference service end to end: `binwatch serve` under uvicorn over real HTTP, on real Postgres.

1. Register a checkpoint with the CLI, count full-size ABID photos, load recorded counts from their ABID
   metadata json, run checks, list mismatches; everything is read back over HTTP and from the database.
2. Two uvicorn workers serve concurrent predictions and checks while another model is promoted; no
   request fails, every answer comes from exactly the model it names, and both workers switch over.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from model.predictor import Predictor
from records.orm import Bin, BinCheck
from tests.api.support import ABID, Server, clean_env, run_cli, start_server, tiny_checkpoint
from tests.worker.support import wait_for

pytestmark = pytest.mark.slow

# Full-size photos with recorded counts 1..7 and 12 (12 must be judged against the "6+" class).
PHOTO_IDS = ["00024", "00056", "00129", "00072", "00033", "00041", "00011", "02750"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.getbasetemp() / "tiny-checkpoints"  # shared with tests/api
    return tiny_checkpoint(root, 1), tiny_checkpoint(root, 2)


def photo(bin_id: str) -> bytes:
    return (ABID / "originals" / f"{bin_id}.jpg").read_bytes()


def metadata(bin_id: str) -> dict:
    return json.loads((ABID / "metadata" / f"{bin_id}.json").read_text())


def registered_id(result_stdout: str) -> int:
    return int(result_stdout.strip().splitlines()[-1])


def admin_key(env: dict[str, str]) -> str:
    return run_cli("apikeys", "create", "--name", "e2e-admin", "--scope", "admin", env=env).stdout.strip()


def test_count_load_check_and_list_mismatches_over_http_on_postgres(
    pg_url: str, tmp_path: Path, models: tuple[Path, Path]
) -> None:
    env = clean_env(BINWATCH_DATABASE_URL=pg_url, BINWATCH_HOME=str(tmp_path / "home"), BINWATCH_DEVICE="cpu")
    admin = admin_key(env)
    scanner = run_cli(
        "apikeys", "create", "--name", "scanner", "--scope", "predict", "--scope", "inventory", env=env
    ).stdout.strip()
    version_id = registered_id(run_cli("models", "register", str(models[0]), "--promote", env=env).stdout)

    server = start_server(env, tmp_path)
    try:
        assert server.wait_ready()["model"]["id"] == version_id
        assert "created the first API key" not in server.log(), "no bootstrap key on Postgres"
        with server.client(scanner) as client:
            _count_load_check_and_list(client, server, pg_url, version_id)
        with server.client(admin) as client:
            models_listed = client.get("/v1/models").json()["items"]
            assert [(m["id"], m["is_active"], m["serving"]) for m in models_listed] == [
                (version_id, True, True)
            ]
    finally:
        server.stop()


def _count_load_check_and_list(client: httpx.Client, server: Server, pg_url: str, version_id: int) -> None:
    # 1. counts for full-size photos, all in one request
    files = [("images", (f"{i}.jpg", photo(i), "image/jpeg")) for i in PHOTO_IDS]
    response = client.post("/v1/predictions", files=files)
    assert response.status_code == 200, response.text
    predictions = {p["filename"].removesuffix(".jpg"): p for p in response.json()["predictions"]}
    assert list(predictions) == PHOTO_IDS
    assert all(p["model"]["id"] == version_id for p in predictions.values())

    # 2. recorded counts from the ABID metadata json, as published
    for bin_id in PHOTO_IDS:
        put = client.put(f"/v1/bins/{bin_id}", json=metadata(bin_id))
        assert put.status_code == 201, put.text
        assert put.json()["expected_count"] == metadata(bin_id)["EXPECTED_QUANTITY"]

    # 3. one check per bin with the same photo
    checks = {}
    for bin_id in PHOTO_IDS:
        check = client.post(f"/v1/bins/{bin_id}/checks", files={"image": (f"{bin_id}.jpg", photo(bin_id))})
        assert check.status_code == 201, check.text
        checks[bin_id] = check.json()
        # the check saw what the prediction saw
        assert checks[bin_id]["predicted_label"] == predictions[bin_id]["label"]
        assert checks[bin_id]["probabilities"] == pytest.approx(
            predictions[bin_id]["probabilities"], abs=1e-4
        )
    assert checks["02750"]["expected_count"] == 12 and checks["02750"]["expected_label"] == "6+"
    assert checks["02750"]["probability_of_expected"] == pytest.approx(
        predictions["02750"]["probabilities"]["6+"]
    )

    # A bin recorded with the count this model finds least likely against its neighbours (the verdict
    # score, model/verdicts.py) for a photo: a mismatch by construction.
    scored = []
    for bin_id, pred in predictions.items():
        labels, values = list(pred["probabilities"]), list(pred["probabilities"].values())
        for i, label in enumerate(labels):
            neighbours = [values[j] for j in (i - 1, i + 1) if 0 <= j < len(values)]
            scored.append((values[i] / max(neighbours), bin_id, label))
    score_min, photo_id, label = min(scored)
    wrong = 6 if label == "6+" else int(label)
    client.put(f"/v1/bins/relabelled-{photo_id}", json={"expected_count": wrong})
    made_up = client.post(
        f"/v1/bins/relabelled-{photo_id}/checks", files={"image": ("x.jpg", photo(photo_id))}
    )
    judged = made_up.json()
    assert judged["judged_by"] == "neighbour_ratio" and judged["score"] == pytest.approx(score_min, rel=1e-3)
    assert score_min < judged["thresholds"]["mismatch"], "the least likely record is below the mismatch point"
    assert judged["verdict"] == "mismatch", made_up.text
    checks[f"relabelled-{photo_id}"] = made_up.json()

    # 4. the listings agree with the verdicts, page by page
    by_verdict: dict[str, set[str]] = {"match": set(), "mismatch": set(), "uncertain": set()}
    for bin_id, check in checks.items():
        by_verdict[check["verdict"]].add(bin_id)
    for verdict, expected in by_verdict.items():
        listed, cursor = [], None
        while True:
            params = {"last_verdict": verdict, "limit": 3, **({"after": cursor} if cursor else {})}
            page = client.get("/v1/bins", params=params).json()
            listed += [b["id"] for b in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert set(listed) == expected and len(listed) == len(expected), verdict
    assert f"relabelled-{photo_id}" in by_verdict["mismatch"]

    # 5. read back: history, photos byte for byte, and the rows in Postgres
    for bin_id, check in checks.items():
        history = client.get(f"/v1/bins/{bin_id}/checks").json()["items"]
        assert [h["id"] for h in history] == [check["id"]]
        assert history[0]["verdict"] == check["verdict"]
        source = photo(bin_id.removeprefix("relabelled-"))
        assert client.get(check["image_url"]).content == source
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    BinCheck.bin_id, BinCheck.verdict, BinCheck.model_version_id, BinCheck.expected_count
                )
            ).all()
            assert {(r.bin_id, r.verdict) for r in rows} == {(b, c["verdict"]) for b, c in checks.items()}
            assert {r.model_version_id for r in rows} == {version_id}
            recorded = dict(conn.execute(sa.select(Bin.id, Bin.expected_count)).all())
            for bin_id in PHOTO_IDS:
                assert recorded[bin_id] == metadata(bin_id)["EXPECTED_QUANTITY"]
            items = conn.execute(sa.select(Bin.items).where(Bin.id == "00011")).scalar_one()
            assert {i["asin"] for i in items} == set(metadata("00011")["BIN_FCSKU_DATA"])
    finally:
        engine.dispose()


@dataclass
class Outcome:
    kind: str  # "predict" or "check"
    photo: str
    started: float
    status: int
    body: dict


def test_concurrent_traffic_while_a_model_is_promoted(
    pg_url: str, tmp_path: Path, models: tuple[Path, Path]
) -> None:
    env = clean_env(
        BINWATCH_DATABASE_URL=pg_url,
        BINWATCH_HOME=str(tmp_path / "home"),
        BINWATCH_WORKERS="2",
        BINWATCH_MODEL_POLL_SECONDS="0.5",
        BINWATCH_BATCH_MAX_WAIT_MS="20",
        BINWATCH_DEVICE="cpu",
    )
    admin = admin_key(env)
    first = registered_id(run_cli("models", "register", str(models[0]), "--promote", env=env).stdout)
    second = registered_id(run_cli("models", "register", str(models[1]), env=env).stdout)
    photos = PHOTO_IDS[:4]
    # What each model says about each photo, computed here, independently of the service.
    reference = {}
    for version, path in ((first, models[0]), (second, models[1])):
        predictor = Predictor(path, device="cpu")
        for bin_id, pred in zip(photos, predictor.predict([photo(b) for b in photos]), strict=True):
            reference[version, bin_id] = pred.probabilities
    assert reference[first, photos[0]] != pytest.approx(reference[second, photos[0]], abs=1e-3)

    def version_of(o: Outcome) -> int:
        return o.body["predictions"][0]["model"]["id"] if o.kind == "predict" else o.body["model"]["id"]

    server = start_server(env, tmp_path)
    stop = threading.Event()
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def traffic(worker: int) -> None:
        kind = "check" if worker % 4 == 3 else "predict"
        # No keep-alive: every request is a new connection, so both uvicorn workers get traffic.
        with httpx.Client(
            base_url=server.url,
            headers={"X-API-Key": admin},
            timeout=120,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client:
            n = 0
            while not stop.is_set():
                bin_id = photos[(worker + n) % len(photos)]
                n += 1
                started = time.monotonic()
                if kind == "predict":
                    r = client.post("/v1/predictions", files={"images": (f"{bin_id}.jpg", photo(bin_id))})
                else:
                    r = client.post(
                        f"/v1/bins/{bin_id}/checks", files={"image": (f"{bin_id}.jpg", photo(bin_id))}
                    )
                with lock:
                    outcomes.append(Outcome(kind, bin_id, started, r.status_code, r.json()))

    try:
        server.wait_ready()
        with server.client(admin) as client:
            for bin_id in photos:
                assert client.put(f"/v1/bins/{bin_id}", json=metadata(bin_id)).status_code == 201
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(traffic, i) for i in range(8)]

            def answered() -> list[Outcome]:
                with lock:
                    return [o for o in outcomes if o.status in (200, 201)]

            # Traffic on the first model before the promotion: an event, not a sleep.
            wait_for(lambda: len(answered()) >= 16, 120, "16 answers before the promotion")
            with server.client(admin) as client:
                promoted = client.post(f"/v1/models/{second}/promote", json={"reason": "mid-traffic"})
            promoted_at = time.monotonic()
            assert promoted.status_code == 200, promoted.text
            assert promoted.json()["model"]["serving"]

            # The other worker polls every 0.5 s, then loads the model. Wait for the event itself: every
            # live worker reports the new version in /metrics (binwatch_active_model_info, "livemax": the old
            # version reads 1 while any worker still serves it). Generous ceiling; a stuck worker fails it.
            def all_switched() -> float | None:
                with server.client(admin) as client:
                    text = client.get("/metrics").text
                info = r'binwatch_active_model_info\{[^}]*version="(\d+)"[^}]*\} (\S+)'
                served = {int(v): float(x) for v, x in re.findall(info, text)}
                return time.monotonic() if served.get(second) == 1.0 and served.get(first) == 0.0 else None

            switched_by = wait_for(all_switched, 120, "every worker serving the promoted model")
            # Some more traffic after the switch, counted in answers rather than seconds.
            settled = len(answered())
            wait_for(lambda: len(answered()) >= settled + 16, 120, "16 more answers after the switch")
            stop.set()
            for f in futures:
                f.result()
    finally:
        stop.set()
        log = server.log()
        server.stop()

    assert outcomes, log
    failed = [(o.kind, o.status, o.body) for o in outcomes if o.status not in (200, 201)]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:3]}"
    served_by = []
    for o in outcomes:
        if o.kind == "predict":
            (p,) = o.body["predictions"]
            version, probs = p["model"]["id"], p["probabilities"]
        else:
            version, probs = o.body["model"]["id"], o.body["probabilities"]
            assert o.body["model_version_id"] == version
        # the answer is exactly what the named model says about this photo: no mixing of models
        assert probs == pytest.approx(reference[version, o.photo], abs=1e-3), (o.kind, version)
        served_by.append((o.started, version))
    assert {v for _, v in served_by} == {first, second}
    # Once both workers had switched, no answer came from the old model again.
    assert all(v == second for started, v in served_by if started >= switched_by), (
        "a worker went back to the old model"
    )
    assert any(v == first for started, v in served_by if started < promoted_at)
    checks = [o for o in outcomes if o.kind == "check"]
    assert checks, "check traffic ran"

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.select(sa.func.count()).select_from(BinCheck)).scalar_one()
            by_model = dict(
                conn.execute(
                    sa.select(BinCheck.model_version_id, sa.func.count()).group_by(BinCheck.model_version_id)
                ).all()
            )
    finally:
        engine.dispose()
    assert stored == len(checks)
    assert sum(by_model.values()) == len(checks)
    assert by_model.get(second, 0) == sum(1 for o in checks if o.body["model"]["id"] == second)
    assert "Traceback" not in log
