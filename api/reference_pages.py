"""The API reference pages, /docs (Swagger UI) and /redoc (ReDoc), served from this deployment alone.

Invariants (issue 24):

- No page of the origin loads anything from another host. FastAPI's own pages load Swagger UI and ReDoc
  from a public CDN with floating versions; a tampered file there would run with a signed-in operator's
  console cookie. Here the assets are the files of the pinned ``fastapi-offline`` wheel (pyproject.toml),
  served under ``/reference-assets/``.
- Each page carries a Content-Security-Policy that allows scripts from this origin only, plus the one
  inline script Swagger UI needs, by its sha256 (computed from the page itself, so the hash cannot drift
  from the script). Requests the pages make ("Try it out") go to this origin only (``connect-src 'self'``).
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/reference-assets"
ASSETS = files("fastapi_offline") / "static"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def _script_hashes(html: str) -> str:
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )


def _policy(html: str, extra: str = "") -> str:
    return (
        f"default-src 'none'; script-src 'self' {_script_hashes(html)}; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data:; font-src 'self'; connect-src 'self'; {extra}"
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def _page(response: HTMLResponse, extra: str = "") -> tuple[str, dict[str, str]]:
    html = bytes(response.body).decode()
    return html, {"Content-Security-Policy": _policy(html, extra), "Cache-Control": "no-store"}


def install(app: FastAPI) -> None:
    """Mount the assets and the two pages (the app is created with ``docs_url=None, redoc_url=None``)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=str(ASSETS)), name="reference-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    swagger = _page(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API reference",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )
    )
    # ReDoc renders the document in a web worker it starts from a blob: URL.
    redoc = _page(
        get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} API reference",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        ),
        "worker-src blob:; ",
    )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(swagger[0], headers=swagger[1])

    @app.get("/redoc", include_in_schema=False)
    async def reference() -> HTMLResponse:
        return HTMLResponse(redoc[0], headers=redoc[1])
