"""Connection deadlines and the connection cap of a real `binwatch serve`, over raw sockets (issue 24,
api/http_protocol.py): silent, half-request-line, half-header and trickled-body connections are closed
within their deadline with a 408, and /healthz keeps answering with more idle connections open than the
cap."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.api.support import Server, clean_env, start_server

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
CAP = 24


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    root = tmp_path_factory.mktemp("deadlines")
    env = clean_env(
        BINWATCH_HOME=str(root / "home"),
        BINWATCH_DEVICE="cpu",
        BINWATCH_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        BINWATCH_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        BINWATCH_MAX_CONNECTIONS=str(CAP),
    )
    srv = start_server(env, root / "logs")
    srv.wait_ready()
    yield srv
    srv.stop()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def answered(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"GET /heal",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1",
    ],
    ids=["silent", "half-request-line", "half-headers", "half-a-header"],
)
def test_a_connection_that_does_not_finish_its_headers_is_closed_in_time(server: Server, sent: bytes) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        status, problem = answered(read_all(sock))
        took = time.monotonic() - started
    assert (
        status == 408
        and problem["status"] == 408
        and "no complete request headers within 1 s" in problem["detail"]
    )
    assert HEADER_TIMEOUT * 0.8 < took < HEADER_TIMEOUT + 2


def test_a_trickled_body_is_closed_at_its_deadline(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1000\r\n\r\n"
        )
        started = time.monotonic()
        raw = b""
        for _ in range(40):  # a byte every 0.25 s: ten times longer than the deadline allows
            try:
                sock.sendall(b"a")
            except OSError:
                break
            time.sleep(0.25)
            if time.monotonic() - started > BODY_TIMEOUT + 3:
                break
        raw = read_all(sock)
        took = time.monotonic() - started
    status, problem = answered(raw)
    assert status == 408 and "the request body did not arrive within 2 s" in problem["detail"]
    assert BODY_TIMEOUT * 0.8 < took < BODY_TIMEOUT + 3


def test_the_next_request_on_a_kept_alive_connection_gets_its_own_header_deadline(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        status, _ = answered(read_all(sock))
    assert status == 408


def test_healthz_answers_with_more_idle_connections_open_than_the_cap(server: Server) -> None:
    idle = [connect(server) for _ in range(CAP * 2)]
    try:
        time.sleep(0.2)
        for _ in range(3):
            with connect(server) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert read_all(sock).startswith(b"HTTP/1.1 200"), "healthz past the cap"
        # The oldest idle connections were closed to make room (before their own deadline), each told why.
        evicted = 0
        for sock in idle:
            sock.settimeout(HEADER_TIMEOUT + 2)
            data = read_all(sock)
            assert data.startswith(b"HTTP/1.1 408")
            evicted += b"closed to make room" in data
        assert evicted >= CAP
    finally:
        for sock in idle:
            sock.close()
