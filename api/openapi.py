"""The OpenAPI document, corrected where FastAPI's generated one does not describe what the API sends.

FastAPI declares every validation error as ``application/json`` with its own ``HTTPValidationError``
shape, while this API answers them, like every error, as ``application/problem+json`` (api/problems.py);
and it leaves out errors that happen before a route runs: 400 for a body that cannot be parsed, 413 for
one over the size limit. Clients generated from the document would get both wrong, and the schema fuzz
tests (tests/api/test_fuzz.py) hold the document to what the server does.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

from api.problems import PROBLEM_MEDIA_TYPE

PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}
FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _problem(status: int, detail: str) -> dict[str, Any]:
    return {
        "description": HTTPStatus(status).phrase,
        "content": {
            PROBLEM_MEDIA_TYPE: {
                "schema": PROBLEM_REF,
                "example": {
                    "type": "about:blank",
                    "title": HTTPStatus(status).phrase,
                    "status": status,
                    "detail": detail,
                },
            }
        },
    }


def _fix_operation(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    invalid = responses.get("422")
    if invalid is not None:
        content = invalid.get("content", {})
        problem = content.get(PROBLEM_MEDIA_TYPE) or {"schema": PROBLEM_REF}
        invalid["content"] = {PROBLEM_MEDIA_TYPE: problem}
    if "requestBody" in operation:
        responses.setdefault(
            "400", _problem(400, "the request body could not be parsed (malformed JSON or multipart data)")
        )
        responses.setdefault("413", _problem(413, "the request body is larger than the limit"))


# OpenAPI links: where a response's ids lead. Clients (and the schema fuzzer's stateful phase) follow them
# from a bin to its checks and from a check to its photo and review.
_BIN = {"bin_id": "$response.body#/id"}
_CHECK = {"bin_id": "$response.body#/bin_id", "check_id": "$response.body#/id"}
LINKS: dict[tuple[str, str], dict[str, Any]] = {
    ("put", "/v1/bins/{bin_id}"): {
        "CheckThisBin": ("create_check_v1_bins__bin_id__checks_post", _BIN),
        "ItsChecks": ("list_checks_v1_bins__bin_id__checks_get", _BIN),
        "ThisBin": ("get_bin_v1_bins__bin_id__get", _BIN),
    },
    ("post", "/v1/bins/{bin_id}/checks"): {
        "ThisCheck": ("get_check_v1_bins__bin_id__checks__check_id__get", _CHECK),
        "ItsPhoto": ("get_check_image_v1_bins__bin_id__checks__check_id__image_get", _CHECK),
        "ReviewIt": ("review_check_v1_bins__bin_id__checks__check_id__review_post", _CHECK),
    },
}


def _add_links(document: dict[str, Any]) -> None:
    for (method, path), links in LINKS.items():
        operation = document.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        for status, response in operation.get("responses", {}).items():
            if status.startswith("2"):
                response["links"] = {
                    name: {"operationId": target, "parameters": dict(params)}
                    for name, (target, params) in links.items()
                }


def _uses(document: Any, name: str) -> bool:
    ref = f"#/components/schemas/{name}"
    if isinstance(document, dict):
        return any(v == ref if k == "$ref" else _uses(v, name) for k, v in document.items())
    if isinstance(document, list):
        return any(_uses(item, name) for item in document)
    return False


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with the corrected document (built once, then cached like FastAPI's)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        for path_item in document.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict) and "responses" in operation:
                    _fix_operation(operation)
        _add_links(document)
        schemas = document.get("components", {}).get("schemas", {})
        for name in FASTAPI_ERROR_SCHEMAS:
            if name in schemas:
                rest = {k: v for k, v in document.items() if k != "components"}
                others = {k: v for k, v in schemas.items() if k not in FASTAPI_ERROR_SCHEMAS}
                if not _uses(rest, name) and not _uses(others, name):
                    del schemas[name]
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
