"""Hardening that needs a real server (uvicorn, sockets, a process that dies): requests uvicorn cannot
parse, authentication before the body, and retries after the API died between commit and response."""

from __future__ import annotations

import http.client
import re
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.api.support import Server, clean_env, create_key, originals, start_server
from tests.conftest import REPO
from tests.worker.support import delete_redis_prefix

pytestmark = pytest.mark.slow

# Run as a separate process only: importing it here would install its listeners in the test process.
DYING = Path(__file__).with_name("serve_dying_after_commit.py")
DIED = 17  # its exit status


@pytest.fixture
def prod_env(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    prefix = f"bwhard-{uuid.uuid4().hex[:8]}:"
    yield clean_env(
        BINWATCH_HOME=str(tmp_path / "home"),
        BINWATCH_DEVICE="cpu",
        BINWATCH_DATABASE_URL=pg_url,
        BINWATCH_BROKER_URL=f"{redis_url}/0",
        BINWATCH_BROKER_KEY_PREFIX=prefix,
        BINWATCH_INSTALL_BUNDLED_MODEL="true",
        PYTHONPATH=str(REPO),
    )
    delete_redis_prefix(redis_url, prefix)


def _start_dying(env: dict[str, str], log_dir: Path) -> Server:
    server = start_server(env, log_dir, command=(sys.executable, str(DYING)))
    server.wait_ready()
    return server


def _lost_response(server: Server, send: Callable[[], httpx.Response]) -> None:
    with pytest.raises(httpx.TransportError):
        send()
    assert server.proc.wait(timeout=30) == DIED, server.log()[-4000:]


def test_a_check_whose_response_was_lost_is_retried_safely(prod_env: dict[str, str], tmp_path: Path) -> None:
    photo = originals(1)[0].read_bytes()
    dying = _start_dying(prod_env, tmp_path / "logs")
    key = create_key(prod_env["BINWATCH_DATABASE_URL"], "inventory")
    headers = {"X-API-Key": key, "Idempotency-Key": "shift-7-bin-00042"}
    with dying.client(key) as client:
        assert client.put("/v1/bins/00042", json={"expected_count": 3}).status_code == 201

        def send() -> httpx.Response:
            return client.post(
                "/v1/bins/00042/checks", files={"image": ("b.jpg", photo, "image/jpeg")}, headers=headers
            )

        _lost_response(dying, send)

    server = start_server(prod_env, tmp_path / "logs")
    try:
        server.wait_ready()
        with server.client(key) as client:
            stored = client.get("/v1/bins/00042/checks").json()["items"]
            assert len(stored) == 1, "the check was committed before the API died"
            retry = client.post(
                "/v1/bins/00042/checks", files={"image": ("b.jpg", photo, "image/jpeg")}, headers=headers
            )
            assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true", retry.text
            assert retry.json()["id"] == stored[0]["id"]
            assert len(client.get("/v1/bins/00042/checks").json()["items"]) == 1
            assert client.get("/v1/bins/00042").json()["last_verdict_check_id"] == stored[0]["id"]
    finally:
        server.stop()


def test_a_job_submission_whose_response_was_lost_is_queued_once(
    prod_env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    dying = _start_dying(prod_env, tmp_path / "logs")
    key = create_key(prod_env["BINWATCH_DATABASE_URL"], "train")
    headers = {"Idempotency-Key": "nightly-2026-11-26"}
    body = {"dataset": {"uri": "/data/abid", "limit": 100}, "hyperparameters": {"recipe": "smoke"}}
    with dying.client(key) as client:
        _lost_response(dying, lambda: client.post("/v1/training-jobs", json=body, headers=headers))

    queue = f"{prod_env['BINWATCH_BROKER_KEY_PREFIX']}training"
    broker = redis.Redis.from_url(f"{redis_url}/0")
    # It died after the commit and before queueing: the job exists, no task does.
    assert broker.llen(queue) == 0
    server = start_server(prod_env, tmp_path / "logs")
    try:
        server.wait_ready()
        with server.client(key) as client:
            jobs = client.get("/v1/training-jobs").json()["items"]
            assert [j["status"] for j in jobs] == ["queued"]
            retry = client.post("/v1/training-jobs", json=body, headers=headers)
            assert retry.status_code == 202 and retry.headers["idempotent-replayed"] == "true", retry.text
            assert retry.json()["id"] == jobs[0]["id"]
            assert retry.headers["location"].endswith(f"/v1/training-jobs/{jobs[0]['id']}")
            assert len(client.get("/v1/training-jobs").json()["items"]) == 1
        # The replay queued the task the dead process never sent.
        messages = broker.lrange(queue, 0, -1)
        assert len(messages) == 1 and jobs[0]["id"].encode() in messages[0]
    finally:
        broker.close()
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("hardening-http")
    srv = start_server(clean_env(BINWATCH_HOME=str(home / "home"), BINWATCH_DEVICE="cpu"), home)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _raw(port: int, head: bytes, timeout: float) -> bytes:
    """Send ``head`` and read one whole response (headers and Content-Length bytes); b"" on timeout."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        sock.settimeout(timeout)
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return data
                data += chunk
                header, sep, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", header)
                if sep and length and len(body) >= int(length.group(1)):
                    return data
        except TimeoutError:
            return data


def test_unauthenticated_requests_are_refused_before_their_body(server: Server) -> None:
    # Headers only, announcing 15 MB that never come: the 401 must not wait for them.
    head = (
        b"POST /v1/predictions HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        b"Content-Length: 15000000\r\n%b\r\n"
    )
    answer = _raw(server.port, head % b"", timeout=5)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]
    assert b"application/problem+json" in answer and b"missing API key" in answer
    wrong = _raw(server.port, head % b"X-API-Key: bw_not-a-key\r\n", timeout=5)
    assert wrong.startswith(b"HTTP/1.1 401") and b"invalid or revoked" in wrong, wrong[:300]
    # With a valid key the same request waits for its body (nothing comes back in 2 s).
    key = create_key(f"sqlite:///{server.env['BINWATCH_HOME']}/binwatch.db", "predict")
    assert _raw(server.port, head % f"X-API-Key: {key}\r\n".encode(), timeout=2) == b""


def test_unparsable_and_overlong_requests_get_problem_documents(server: Server) -> None:
    for path, status in (("/v1/bins/" + "a" * 100_000, 400), ("/v1/bins/" + "a" * 9000, 414)):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        assert response.status == status, body[:300]
        assert response.getheader("content-type") == "application/problem+json", response.getheaders()
        assert b'"status": %d' % status in body or b'"status":%d' % status in body, body
