"""Authentication before the body: a ``/v1`` request without a valid API key is refused (401) before a
byte of its body is read, parsed or buffered.

FastAPI resolves a route's dependencies (where the scope check lives, api/deps.py) only after it has
read and parsed the body, so an anonymous client could otherwise make the server take in, and parse,
bodies up to the upload limit. The gate checks the key's presence and validity here; the route's
dependency then only checks its scope, with the principal the gate found (no second lookup).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import PRINCIPAL_SCOPE_KEY, authenticate, get_state_from_app, secret_from_headers
from api.problems import UNAUTHENTICATED, problem_response

MISSING_KEY = (
    "missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>' "
    "(create one with `binwatch apikeys create`)"
)
INVALID_KEY = "invalid or revoked API key"


class AuthGateMiddleware:
    def __init__(self, app: ASGIApp, prefix: str = "/v1/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        secret = secret_from_headers(Headers(scope=scope))
        principal = None
        if secret:
            state = get_state_from_app(scope["app"])
            principal = await run_in_threadpool(authenticate, state, secret)
        if principal is None:
            response = problem_response(
                None,
                401,
                INVALID_KEY if secret else MISSING_KEY,
                type=UNAUTHENTICATED,
                title="Unauthenticated",
                headers={"WWW-Authenticate": "Bearer"},
                instance=scope["path"],
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)
