"""Request body limits, enforced before and while the body streams in (413, problem+json).

- A declared ``Content-Length`` over the limit is refused before the application (or its multipart
  parser) sees a byte.
- A body without a length (chunked) is counted as it arrives; the moment it passes the limit, reading
  stops and the request fails with 413. Nothing is held in memory beyond what the parser already had.

In both cases the rest of the body is read and thrown away (up to ``drain_bytes``) before answering:
HTTP/1.1 clients such as httpx and requests write the whole body before reading the response, so a
server that answers and closes early makes them report a broken connection instead of the 413. Bodies
beyond ``drain_bytes`` are not drained; the connection is closed.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import PROBLEM_MEDIA_TYPE

# Multipart framing (boundaries, part headers, small form fields) on top of the image bytes themselves.
MULTIPART_SLACK_BYTES = 64 * 1024


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit; FastAPI re-raises HTTPExceptions
    that come out of body parsing, and the problem handlers turn it into a 413 problem."""

    def __init__(self, limit: int, what: str) -> None:
        super().__init__(status_code=413, detail=_detail(limit, what))


def _detail(limit: int, what: str) -> str:
    return f"the request body is larger than the limit of {limit} bytes for {what}"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, upload_bytes: int, json_bytes: int, drain_bytes: int) -> None:
        self.app = app
        self.upload_limit = upload_bytes + MULTIPART_SLACK_BYTES
        self.upload_bytes = upload_bytes
        self.json_limit = json_bytes
        self.drain_bytes = drain_bytes

    def _limit(self, headers: Headers) -> tuple[int, str]:
        if headers.get("content-type", "").lower().startswith("multipart/"):
            return (
                self.upload_limit,
                f"uploads ({self.upload_bytes} bytes of files, BINWATCH_MAX_UPLOAD_BYTES)",
            )
        return self.json_limit, "JSON and other bodies (BINWATCH_MAX_JSON_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit, what = self._limit(headers)
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            if declared <= self.drain_bytes:
                await _drain(receive, self.drain_bytes)
            await _send_413(scope, send, limit, what)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if message.get("more_body", False):
                        await _drain(receive, self.drain_bytes - received)
                    raise BodyTooLarge(limit, what)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            # Raised outside FastAPI's body parsing (e.g. by code reading request.stream() itself).
            if started:
                raise
            await _send_413(scope, send, limit, what)


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


async def _drain(receive: Receive, budget: int) -> None:
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_413(scope: Scope, send: Send, limit: int, what: str) -> None:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Content Too Large",
            "status": 413,
            "detail": _detail(limit, what),
            "instance": scope.get("path", ""),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                # The unread rest of an undrained body would be parsed as the next request.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
