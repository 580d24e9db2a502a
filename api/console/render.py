"""Rendering console pages: the Jinja2 environment, the filters the templates use, and the headers.

Every page gets a strict Content-Security-Policy: scripts, styles and images from this origin only (and
``data:`` images for the upload previews), no inline script or style, no framing. The console's CSS and
JS are files in api/console/static; nothing is fetched from a CDN. Pages are never cached: they show
live state and the CSRF token.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from api.console.session import CSRF_FIELD, Viewer

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# (path, label, scope needed; None: any signed-in key)
NAV = (
    ("/", "Overview", None),
    ("/queue", "Mismatch queue", "inventory"),
    ("/upload", "Upload", None),
    ("/models", "Models", None),
    ("/jobs", "Jobs", "train"),
)


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


templates.env.filters.update(when=_when, pct=_pct, num=_num, seconds=_seconds)


def page(
    request: Request,
    name: str,
    viewer: Viewer | None,
    status_code: int = 200,
    **context: Any,
) -> Response:
    nav = [(path, label) for path, label, scope in NAV if viewer and (scope is None or viewer.can(scope))]
    return templates.TemplateResponse(
        request,
        name,
        {"viewer": viewer, "nav": nav, "csrf_field": CSRF_FIELD, "path": request.url.path, **context},
        status_code=status_code,
        headers=PAGE_HEADERS,
    )
