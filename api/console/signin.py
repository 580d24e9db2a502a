"""Signing in and out of the console."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api.console.render import page
from api.console.session import (
    SESSION_COOKIE,
    SIGNIN_CSRF_COOKIE,
    SignedIn,
    State,
    checked_form,
    current_viewer,
    new_signin_token,
    safe_next,
    set_cookie,
    signin_token_ok,
)
from api.deps import AppState
from records import apikeys, console_sessions
from records.db import session_scope

log = logging.getLogger("binwatch.console")

router = APIRouter(include_in_schema=False)


def _signin_page(
    request: Request, next_path: str, status_code: int = 200, error: str | None = None
) -> Response:
    token = new_signin_token()
    response = page(
        request, "signin.html", None, status_code, signin_csrf=token, next=safe_next(next_path), error=error
    )
    secure = request.app.state.binwatch.settings.console_secure_cookie
    set_cookie(response, SIGNIN_CSRF_COOKIE, token, secure=secure, max_age=3600)
    return response


@router.get("/signin")
async def signin_form(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query's name
    if await current_viewer(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _signin_page(request, next)


def _open(state: AppState, secret: str) -> tuple[str, str] | None:
    """(cookie token, key name) for a valid key, or None."""
    hours = state.settings.console_session_hours
    with session_scope(state.session_factory) as session:
        key = apikeys.authenticate(session, secret)
        if key is None:
            return None
        token, _row = console_sessions.open_session(session, key, timedelta(hours=hours))
        return token, key.name


@router.post("/signin")
async def signin(request: Request, state: State) -> Response:
    form = await request.form()
    next_path = safe_next(str(form.get("next") or "/"))
    if not signin_token_ok(request, form):
        return _signin_page(
            request,
            next_path,
            403,
            "The sign-in form had expired or did not come from this site; it has been reloaded, try again.",
        )
    secret = str(form.get("api_key") or "").strip()
    opened = await run_in_threadpool(_open, state, secret) if secret else None
    if opened is None:
        return _signin_page(
            request,
            next_path,
            401,
            "That API key is not valid or has been revoked. Check it, or create one with "
            "`binwatch apikeys create`.",
        )
    token, name = opened
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        # Signing in over another session (a shared browser) ends that one on the server too.
        await run_in_threadpool(_close, state, previous)
    log.info("console: %s signed in", name)
    response = RedirectResponse(next_path, status_code=303)
    set_cookie(
        response,
        SESSION_COOKIE,
        token,
        secure=state.settings.console_secure_cookie,
        max_age=int(state.settings.console_session_hours * 3600),
    )
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/")
    return response


def _close(state: AppState, token: str) -> None:
    with session_scope(state.session_factory) as session:
        console_sessions.close_session(session, token)


@router.post("/signout")
async def signout(request: Request, viewer: SignedIn, state: State) -> Response:
    await checked_form(request, viewer)
    await run_in_threadpool(_close, state, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
