"""Who is looking at a console page: the sign-in cookie, the scopes it carries, and CSRF on every form.

- Signing in exchanges an API key for a session (records/console_sessions.py). The cookie holds only a
  random token: HttpOnly (no script can read it), SameSite=Lax (other sites' forms do not carry it),
  Secure when BINWATCH_CONSOLE_SECURE_COOKIE is set. The API key never reaches the browser again.
- Every form carries the session's CSRF token and every POST compares it (``checked_form``); the sign-in
  form itself, before there is a session, uses a double-submit cookie, so another site cannot sign a
  browser in to its own key either.
- Pages declare the scope they need (``require``). Anonymous visitors are sent to the sign-in page; a
  signed-in key without the scope gets a 403 page that says which scope it lacks. admin has every scope.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from api.deps import AppState, Principal, get_state
from records import console_sessions
from records.db import session_scope

SESSION_COOKIE = "binwatch_session"
SIGNIN_CSRF_COOKIE = "binwatch_signin_csrf"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class Viewer:
    """A signed-in browser: its key, its scopes and the CSRF token its forms must carry."""

    key_id: int
    name: str
    scopes: tuple[str, ...]
    csrf: str

    def can(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    @property
    def principal(self) -> Principal:
        """The same principal an API request with this key would have (for the API's own functions)."""
        return Principal(self.key_id, self.name, self.scopes)


class SignInNeeded(Exception):
    """No live session: the visitor is sent to the sign-in page (api/console/__init__.py)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class ScopeMissing(Exception):
    """A signed-in key without the scope a page or form needs (a 403 page)."""

    def __init__(self, viewer: Viewer, scope: str) -> None:
        super().__init__(scope)
        self.viewer = viewer
        self.scope = scope


class CsrfFailed(Exception):
    """A form post without the session's CSRF token (a 403 page; nothing is changed)."""


def _lookup(state: AppState, token: str) -> console_sessions.SignedIn | None:
    with session_scope(state.session_factory) as session:
        return console_sessions.find_session(session, token)


async def current_viewer(request: Request) -> Viewer | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    found = await run_in_threadpool(_lookup, get_state(request), token)
    if found is None:
        return None
    return Viewer(found.key_id, found.key_name, found.scopes, found.csrf_token)


def _next_path(request: Request) -> str:
    path = request.url.path
    if request.url.query:
        path += "?" + request.url.query
    return path


def require(scope: str | None):  # noqa: ANN201 - a FastAPI dependency factory
    """A dependency: the signed-in viewer, who must have ``scope`` (None: any signed-in key)."""

    async def dependency(request: Request) -> Viewer:
        viewer = await current_viewer(request)
        if viewer is None:
            raise SignInNeeded(_next_path(request) if request.method == "GET" else "/")
        if scope is not None and not viewer.can(scope):
            raise ScopeMissing(viewer, scope)
        return viewer

    dependency.__name__ = f"console_requires_{scope or 'any'}"
    return dependency


SignedIn = Annotated[Viewer, Depends(require(None))]
State = Annotated[AppState, Depends(get_state)]


def _same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


async def checked_form(request: Request, viewer: Viewer) -> FormData:
    """The posted form, once its CSRF token is the session's; CsrfFailed otherwise."""
    form = await request.form()
    token = form.get(CSRF_FIELD)
    if not isinstance(token, str) or not _same(token, viewer.csrf):
        raise CsrfFailed()
    return form


def whole_number(text: str) -> int | None:
    """A form field's whole number (ASCII digits, at most 9 of them: a 32-bit column), or None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None


def new_signin_token() -> str:
    return secrets.token_urlsafe(32)


def signin_token_ok(request: Request, form: FormData) -> bool:
    token = form.get(CSRF_FIELD)
    return isinstance(token, str) and _same(token, request.cookies.get(SIGNIN_CSRF_COOKIE))


def set_cookie(response: Response, name: str, value: str, *, secure: bool, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax", secure=secure)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (never //host or a URL)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def signin_url(next_path: str) -> str:
    return "/signin" if next_path in ("", "/") else f"/signin?next={quote(next_path, safe='/')}"
