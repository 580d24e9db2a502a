"""Headers every response carries, and the URL length limit (both before any route runs).

- ``X-Content-Type-Options: nosniff`` on every response: stored check photos are served as uploaded,
  and a browser must never sniff one into HTML or script whatever bytes it holds.
- Photos (``/v1/bins/{id}/checks/{id}/image``) also get ``Content-Security-Policy: default-src 'none';
  sandbox``: opened directly in a browser, nothing in them can run or load.
- A URL (path and query) over ``MAX_URL_BYTES`` is a 414 problem, not a route lookup: nothing here
  needs one, and logs and metrics should not carry them.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response

MAX_URL_BYTES = 8192
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_SANDBOX = (b"content-security-policy", b"default-src 'none'; sandbox")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        if url_bytes > MAX_URL_BYTES:
            response = problem_response(
                None, 414, f"the URL is {url_bytes} bytes long; at most {MAX_URL_BYTES} are accepted"
            )
            await response(scope, receive, _with_headers(send, [_NOSNIFF]))
            return
        extra = [_NOSNIFF]
        if scope["path"].endswith("/image"):
            extra.append(_SANDBOX)
        await self.app(scope, receive, _with_headers(send, extra))


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            names = {name.lower() for name, _ in message.get("headers", [])}
            message["headers"] = list(message.get("headers", [])) + [h for h in extra if h[0] not in names]
        await send(message)

    return sending
