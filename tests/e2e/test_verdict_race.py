"""Verdicts under concurrency: many clients changing recorded counts while others check photos.

The documented rule is that ``last_verdict`` judges the count the bin records now (a changed count
clears it). A check reads the count, spends a while counting the photo, then stores its verdict; a PUT
landing in between used to leave the old count's verdict on the bin. Run against a real server on both
backends (two uvicorn workers on Postgres), then every bin is audited through the API: the check that
gave its ``last_verdict`` must have judged exactly its current ``expected_count``, with that verdict.
"""

from __future__ import annotations

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api.support import clean_env, create_key, originals, start_server
from tests.worker.support import delete_redis_prefix

pytestmark = pytest.mark.slow

BINS = 30
ROUNDS = 4


def _race(url: str, key: str) -> tuple[int, int, int]:
    """(stale bins, bins with a verdict, checks whose count was changed while they ran)."""
    photos = [p.read_bytes() for p in originals(6)]
    bins = [f"R{i:03d}" for i in range(BINS)]
    rng = random.Random(7)
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=120) as client:
        for bin_id in bins:
            assert client.put(f"/v1/bins/{bin_id}", json={"expected_count": 1}).status_code == 201

        def put(bin_id: str) -> None:
            response = client.put(f"/v1/bins/{bin_id}", json={"expected_count": rng.choice([1, 2, 3, 7])})
            assert response.status_code == 200, response.text

        def check(bin_id: str) -> bool:
            photo = rng.choice(photos)
            response = client.post(
                f"/v1/bins/{bin_id}/checks", files={"image": ("p.jpg", photo, "image/jpeg")}
            )
            assert response.status_code == 201, response.text
            return not response.json()["updated_last_verdict"]

        work = [(fn, b) for _ in range(ROUNDS) for b in bins for fn in (check, put, check)]
        rng.shuffle(work)
        with ThreadPoolExecutor(max_workers=12) as pool:
            outcomes = list(pool.map(lambda item: item[0](item[1]), work))
        overtaken = sum(1 for (fn, _), o in zip(work, outcomes, strict=True) if fn is check and o)

        stale = 0
        judged = 0
        for bin_id in bins:
            record = client.get(f"/v1/bins/{bin_id}").json()
            if record["last_verdict"] is None:
                continue
            judged += 1
            source = client.get(f"/v1/bins/{bin_id}/checks/{record['last_verdict_check_id']}").json()
            if (
                source["expected_count"] != record["expected_count"]
                or source["verdict"] != record["last_verdict"]
            ):
                stale += 1
        return stale, judged, overtaken


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_last_verdict_always_judges_the_current_count(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = clean_env(BINWATCH_HOME=str(tmp_path / "home"), BINWATCH_DEVICE="cpu", OMP_NUM_THREADS="1")
    prefix = None
    if backend == "postgres":
        pg_url = request.getfixturevalue("pg_url")
        redis_url = request.getfixturevalue("redis_url")
        prefix = f"bwrace-{uuid.uuid4().hex[:8]}:"
        env.update(
            BINWATCH_DATABASE_URL=pg_url,
            BINWATCH_BROKER_URL=f"{redis_url}/0",
            BINWATCH_BROKER_KEY_PREFIX=prefix,
            BINWATCH_INSTALL_BUNDLED_MODEL="true",
            BINWATCH_WORKERS="2",
        )
    server = start_server(env, tmp_path / "logs")
    try:
        server.wait_ready()
        database = env.get("BINWATCH_DATABASE_URL") or f"sqlite:///{tmp_path / 'home' / 'binwatch.db'}"
        stale, judged, overtaken = _race(server.url, create_key(database, "inventory", name="race"))
        print(f"{backend}: {overtaken} checks overtaken by a PUT; {judged} bins judged; {stale} stale")
        assert stale == 0, f"{stale} of {judged} bins have a verdict of a count they no longer record"
        assert judged > 0, "no bin kept a verdict: the race audited nothing"
    finally:
        server.stop()
        if prefix:
            delete_redis_prefix(request.getfixturevalue("redis_url"), prefix)
