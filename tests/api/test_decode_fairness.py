"""Hostile photos do not stall everyone's counts (issue 24): three keys flooding a real `binwatch serve`
with 7000x7000 PNGs of zeros, and one honest key whose one-photo predictions stay within a few times their
idle latency (``ALLOWED``), on the embedded default and on Postgres.

Before the fix each of those PNGs (a few KB, under the 50 Mpx limit) cost 1-1.8 s of decoding on the one
decode thread, and an honest prediction waited 5-16 s behind them. Now they are refused from their header
(too many pixels a byte for a format decoded whole), and keys take turns on the decode threads.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from pathlib import Path

import pytest

from tests.api.support import clean_env, create_key, originals, png_bomb, start_server

pytestmark = pytest.mark.slow

HOSTILE_CLIENTS = 3
PHOTOS_PER_HOSTILE_REQUEST = 16
HONEST_REQUESTS = 20
# The goal is 3x (issue 24). On a 2-core machine the three flooding clients run on the server's own cores;
# medians of 20 land at 2.5-2.8x (11-15 ms idle, 29-43 ms flooded; before the fix, 5-16 s). The bound
# leaves room for a noisier machine, still two orders of magnitude below what the flood did before.
ALLOWED = 4.0


def _honest_latency(client, photo: bytes) -> float:  # noqa: ANN001 - httpx.Client
    times = []
    for _ in range(HONEST_REQUESTS):
        started = time.monotonic()
        answer = client.post("/v1/predictions", files={"images": ("bin.jpg", photo, "image/jpeg")})
        times.append(time.monotonic() - started)
        assert answer.status_code == 200, answer.text
    return statistics.median(times)


def _flood(url: str, key: str, stop, statuses) -> None:  # noqa: ANN001 - multiprocessing Event, Queue
    """One hostile client, in a process of its own (the honest client's timing must not share a GIL)."""
    import httpx

    bomb = png_bomb(7000, 7000)
    files = [("images", (f"z{i}.png", bomb, "image/png")) for i in range(PHOTOS_PER_HOSTILE_REQUEST)]
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
        for _ in range(400):  # bounded, and stopped as soon as the honest client is done
            if stop.is_set():
                return
            statuses.put(client.post("/v1/predictions", files=files).status_code)


def _measure(server, database_url: str) -> None:  # noqa: ANN001
    honest_key = create_key(database_url, "predict", name="honest")
    hostile_keys = [create_key(database_url, "predict", name=f"hostile{i}") for i in range(HOSTILE_CLIENTS)]
    photo = originals(1)[0].read_bytes()
    with server.client(honest_key) as client:
        _honest_latency(client, photo)  # warm up
        idle = _honest_latency(client, photo)
        spawn = multiprocessing.get_context("spawn")
        stop, queue = spawn.Event(), spawn.Queue()
        flood = [spawn.Process(target=_flood, args=(server.url, k, stop, queue)) for k in hostile_keys]
        for process in flood:
            process.start()
        try:
            time.sleep(2.0)  # the flood is under way
            attacked = _honest_latency(client, photo)
        finally:
            stop.set()
            for process in flood:
                process.join(timeout=120)
        statuses = []
        while not queue.empty():
            statuses.append(queue.get())
    assert statuses and set(statuses) <= {422, 503}, sorted(set(statuses))
    took = f"{idle * 1000:.0f} ms idle, {attacked * 1000:.0f} ms flooded"
    print(f"one-photo prediction: {took} ({attacked / idle:.1f}x, {len(statuses)} hostile requests)")
    assert attacked <= ALLOWED * idle, (
        f"one-photo prediction: {idle * 1000:.0f} ms idle, {attacked * 1000:.0f} ms flooded"
    )


def test_hostile_pngs_do_not_stall_an_honest_key_on_the_embedded_default(tmp_path: Path) -> None:
    env = clean_env(BINWATCH_HOME=str(tmp_path / "home"), BINWATCH_DEVICE="cpu")
    server = start_server(env, tmp_path / "logs")
    try:
        server.wait_ready()
        _measure(server, f"sqlite:///{tmp_path / 'home' / 'binwatch.db'}")
    finally:
        server.stop()


def test_hostile_pngs_do_not_stall_an_honest_key_on_postgres(tmp_path: Path, pg_url: str) -> None:
    env = clean_env(
        BINWATCH_HOME=str(tmp_path / "home"),
        BINWATCH_DEVICE="cpu",
        BINWATCH_DATABASE_URL=pg_url,
        BINWATCH_INSTALL_BUNDLED_MODEL="true",
    )
    server = start_server(env, tmp_path / "logs")
    try:
        server.wait_ready()
        _measure(server, pg_url)
    finally:
        server.stop()
