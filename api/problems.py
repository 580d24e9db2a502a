"""One error shape everywhere: RFC 9457 problem details (``application/problem+json``).

Every error the service returns goes through here: problems raised by our own code (``Problem``),
Starlette/FastAPI HTTP exceptions (unknown routes, wrong methods, malformed multipart bodies), request
validation errors, and unexpected exceptions (a 500 that names no internals; the traceback is logged).

``type`` is ``about:blank`` for errors that the status code says everything about (RFC 9457 section
4.2.1); errors clients may want to branch on get a ``urn:binwatch:problem:<slug>`` type, listed in
docs/api.md.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("binwatch.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
URN = "urn:binwatch:problem:"

# The problem types clients can rely on (documented in docs/api.md).
INVALID_IMAGE = URN + "invalid-image"
VALIDATION = URN + "validation-error"
NO_ACTIVE_MODEL = URN + "no-active-model"
OVERLOADED = URN + "overloaded"
MODEL_UNLOADABLE = URN + "model-unloadable"
UNAUTHENTICATED = URN + "unauthenticated"
FORBIDDEN = URN + "insufficient-scope"


class Problem(Exception):
    """Raise anywhere in request handling to answer with a problem+json response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type: str = "about:blank",  # noqa: A002 - the RFC's field name
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extensions = extensions


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(
        description="Where the problem is: ['body', 'expected_count'], ['path', ...]."
    )
    msg: str
    type: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details; extra members depend on the problem type."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": INVALID_IMAGE,
                    "title": "Unprocessable Content",
                    "status": 422,
                    "detail": "image 'bin.jpg': image data is corrupt or truncated",
                    "instance": "/v1/predictions",
                }
            ]
        },
    )

    type: str = Field(default="about:blank", description="A URI naming the kind of problem.")
    title: str = Field(description="Short summary of the problem type (the HTTP phrase for about:blank).")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request, and what to do about it.")
    instance: str | None = Field(default=None, description="The request path.")
    errors: list[ValidationIssue] | None = Field(
        default=None, description="Validation problems only: each invalid input."
    )


def problem_response(
    request: Request | None,
    status: int,
    detail: str,
    *,
    type: str = "about:blank",  # noqa: A002
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
    body.update(extensions)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


# Tags of discriminated unions in request bodies (api/routes/bins.py): pydantic puts the chosen tag into
# an error's location, which would tell clients about a field that does not exist.
UNION_TAGS = frozenset({"count", "abid"})


def _clean_loc(loc: tuple[Any, ...] | list[Any]) -> list[Any]:
    parts = list(loc)
    if len(parts) > 2 and parts[0] == "body" and parts[1] in UNION_TAGS:
        del parts[1]
    return parts


def _loc_text(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _problem_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        request, exc.status, exc.detail, type=exc.type, title=exc.title, headers=exc.headers, **exc.extensions
    )


async def _http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = str(exc.detail) if exc.detail else HTTPStatus(status).phrase
    if status == 404 and request.scope.get("route") is None:
        detail = f"there is no endpoint at {request.url.path}; the API is described at /docs"
    elif status == 405:
        allowed = _allowed_methods(request)
        detail = f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}"
        # Starlette names only the methods of the first route that matched the path; GET and PUT of
        # one path are separate routes here, and Allow must list them all (RFC 9110 section 15.5.6).
        headers = dict(exc.headers or {}, Allow=", ".join(allowed))
        return problem_response(request, status, detail, headers=headers)
    elif status == 400 and detail == "There was an error parsing the body":
        detail = "the request body could not be parsed (malformed JSON or multipart data)"
    return problem_response(request, status, detail, headers=dict(exc.headers or {}))


def _allowed_methods(request: Request) -> list[str]:
    # From the OpenAPI document: it is what clients read, and FastAPI's nested routers make walking
    # the route table itself version-dependent.
    methods: set[str] = set()
    for template, item in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)), request.url.path):
            methods |= {m.upper() for m in item if m in HTTP_METHODS}
    return sorted(methods)


HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Never echo "input": it can be a whole uploaded file or a secret sent in the wrong field.
    issues = [
        {
            "loc": _clean_loc(err.get("loc", ())),
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    summary = "; ".join(f"{_loc_text(i['loc'])}: {i['msg']}" for i in issues[:5])
    if len(issues) > 5:
        summary += f"; and {len(issues) - 5} more"
    return problem_response(
        request,
        422,
        summary or "the request is invalid",
        type=VALIDATION,
        title="Invalid request",
        errors=issues,
    )


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        request, 500, "internal error; it has been logged on the server (no details are given to clients)"
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _problem_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(Exception, _unexpected_handler)


_EXAMPLES: dict[int, tuple[str, str]] = {
    400: ("about:blank", "the request body could not be parsed (malformed JSON or multipart data)"),
    401: (UNAUTHENTICATED, "missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'"),
    403: (FORBIDDEN, "this API key lacks the 'admin' scope"),
    404: ("about:blank", "bin '00011' has no record; create it with PUT /v1/bins/00011"),
    409: (MODEL_UNLOADABLE, "model version 3 cannot be loaded: checkpoint sha256 does not match"),
    413: ("about:blank", "the request body is larger than the limit of 20971520 bytes"),
    415: ("about:blank", "image 'notes.txt' has content type text/plain, not an image; send JPEG or PNG"),
    422: (INVALID_IMAGE, "image 'bin.jpg': image data is corrupt or truncated"),
    503: (NO_ACTIVE_MODEL, "no model version is active. Install the counter that ships with binwatch: …"),
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json errors for a route."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        type_, detail = _EXAMPLES[status]
        example = {"type": type_, "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
        out[status] = {
            "model": ProblemDetails,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"example": example}},
        }
    return out
