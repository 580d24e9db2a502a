"""uvicorn's HTTP/1.1 protocol, with connection deadlines, a connection cap, and problem+json errors.

uvicorn answers bytes that do not parse as HTTP (a request line or headers too long for the parser,
e.g. a 100,000-character URL; malformed framing) itself, as ``text/plain`` "Invalid HTTP request
received.", before the application sees anything. Clients that branch on ``application/problem+json``
then get something else; this subclass writes the same 400 in the API's error format.
``binwatch serve`` passes it to uvicorn (``http=``). uvicorn is pinned (constraints.txt), and
tests/api/test_hardening.py sends such a request to a real server.

Deadlines and the cap (issue 24; uvicorn has a keep-alive timeout but no header or body deadline, so a
connection that sends nothing, or half a request, stayed open for good and held a file descriptor):

- **Headers**: a connection has ``BINWATCH_HEADER_TIMEOUT_SECONDS`` from the moment it is made, or from the
  end of its previous response, to complete a request's headers; then it is answered 408 and closed.
- **Body**: a request's body must arrive within ``BINWATCH_BODY_TIMEOUT_SECONDS`` of its headers; a slower
  one is answered 408 (unless a response has begun) and closed.
- **Cap**: at most ``BINWATCH_MAX_CONNECTIONS`` connections per process. A new connection past the cap
  closes the oldest connection still waiting for its headers (a silent or trickling one); when every
  connection is busy with a request, the new one is answered 503 and closed. So idle connections cannot
  lock out ``/healthz`` however many there are, as long as the process's file descriptors last.
"""

from __future__ import annotations

import asyncio
import functools
import json
import resource
import time
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.problems import PROBLEM_MEDIA_TYPE

UNPARSABLE = (
    "the request could not be parsed as HTTP/1.1: a malformed request line or headers, or a URL or "
    "headers too long (keep URLs under 8 KB)"
)


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    body_timeout: float
    max_connections: int


@functools.cache
def limits() -> Limits:
    """This process's deadlines and cap, from its settings (each uvicorn worker reads its own)."""
    from settings import Settings

    settings = Settings()
    cap = settings.max_connections
    if cap is None:
        # Below the file-descriptor limit, with room for the database pool, the model files and logs: a
        # connection refused by accept() itself (EMFILE) would never reach the eviction below.
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        cap = max(16, min(4096, (soft if soft != resource.RLIM_INFINITY else 4096) - 128))
    return Limits(settings.header_timeout_seconds, settings.body_timeout_seconds, cap)


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    _deadline: asyncio.TimerHandle | None = None
    # When the connection began waiting for a request's headers; None while it has a request.
    _waiting_since: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = limits().max_connections
        if len(self.connections) > cap and not self._evict_idle():
            self._refuse(
                503, "Service Unavailable", f"this server holds its limit of {cap} connections; retry"
            )
            return
        self._await_headers()

    def _evict_idle(self) -> bool:
        """Close the connection that has waited longest for its headers; False when none is waiting."""
        idle = [
            c for c in self.connections if c is not self and getattr(c, "_waiting_since", None) is not None
        ]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._waiting_since)
        oldest._refuse(
            408, "Request Timeout", "the connection sent no request in time; it was closed to make room"
        )
        return True

    def _await_headers(self) -> None:
        self._waiting_since = time.monotonic()
        self._arm(limits().header_timeout, "no complete request headers within {:g} s")

    def _arm(self, seconds: float, message: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, message.format(seconds))

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, message: str) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.response_started:
            self.transport.close()  # a response is under way: nothing else can be said on this connection
            return
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        self._refuse(408, "Request Timeout", f"{message}; the connection was closed")

    def on_headers_complete(self) -> None:
        self._waiting_since = None
        super().on_headers_complete()
        self._arm(limits().body_timeout, "the request body did not arrive within {:g} s")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._await_headers()  # the next request on this connection gets its own header deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._waiting_since = None
        super().connection_lost(exc)

    def _refuse(self, status: int, title: str, detail: str) -> None:
        self._disarm()
        self._waiting_since = None
        if self.transport.is_closing():
            return
        self._write_problem(status, title, detail)

    def send_400_response(self, msg: str) -> None:
        self._write_problem(400, "Bad Request", UNPARSABLE)

    def _write_problem(self, status: int, title: str, detail: str) -> None:
        body = json.dumps(
            {"type": "about:blank", "title": title, "status": status, "detail": detail}
        ).encode()
        head = [f"HTTP/1.1 {status} {title}\r\n".encode()]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"x-content-type-options: nosniff\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(head))
        self.transport.close()
