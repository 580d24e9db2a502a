"""The operator's web console, served by the API's own app at ``/`` (docs/console.md).

Server-rendered pages (Jinja2) over the same records and rules as the JSON API under ``/v1``: actions
call the API's own route functions, so a form and a JSON request can never disagree. Modules:
session.py (sign-in cookie, scopes, CSRF), render.py (templates, headers), charts.py (SVG charts), and
one module per page group.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse, Response

from api.console import bins, jobs, models, overview, queue, signin, upload
from api.console.render import HERE, page
from api.console.session import CsrfFailed, ScopeMissing, SignInNeeded, current_viewer, signin_url


def install(app: FastAPI) -> None:
    for module in (signin, overview, queue, bins, upload, models, jobs):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="console-static")

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, exc: SignInNeeded) -> Response:
        return RedirectResponse(signin_url(exc.next_path), status_code=303)

    @app.exception_handler(ScopeMissing)
    async def _scope(request: Request, exc: ScopeMissing) -> Response:
        message = (
            f"The API key {exc.viewer.name!r} has the scopes {', '.join(exc.viewer.scopes)}; this page or "
            f"action needs '{exc.scope}'. Sign in with a key that has it."
        )
        return page(request, "refused.html", exc.viewer, 403, message=message)

    @app.exception_handler(CsrfFailed)
    async def _csrf(request: Request, exc: CsrfFailed) -> Response:
        viewer = await current_viewer(request)
        message = (
            "This form did not carry this session's security token (it may come from another site, or from "
            "a page opened before you signed in again). Nothing was changed; reload the page and try again."
        )
        return page(request, "refused.html", viewer, 403, message=message)
