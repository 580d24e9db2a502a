"""What text may reach the database, checked where it enters (the API's request models).

Clients send JSON, and JSON can spell things no database column should hold: a lone UTF-16 surrogate
(``"\\ud800"``) decodes to a Python ``str`` that cannot be encoded as UTF-8, so it is stored and then
breaks every response that contains it; a NUL (``"\\u0000"``) is refused by Postgres text columns with
an error; control characters end up in logs and terminals. The rules:

- every string is valid Unicode text: no lone surrogates, no NUL;
- names and other one-line values also hold no other control characters (``SafeLine``);
- every string has a length limit (the types below, or ``MAX_JSON_STRING`` inside free-form JSON);
- free-form JSON (ABID item data) is walked whole: keys and values (no surrogates, no NUL), no
  NaN/Infinity (not JSON, and Postgres refuses them), bounded depth and size.

Violations raise ``ValueError`` with a message that names what to fix; pydantic turns them into 422s.
``scrub`` is the other half of the promise that a stored record never breaks a read: rows written
before these rules existed (or by other tools) are repaired on the way out.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

# Everything below U+0020 but tab, newline and carriage return, plus DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

MAX_JSON_DEPTH = 8
MAX_JSON_STRING = 4096
MAX_JSON_NODES = 20_000


def text_problem(value: str, *, one_line: bool = False) -> str | None:
    """Why ``value`` may not be stored, or None when it may."""
    if _SURROGATE.search(value):
        return "contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not valid Unicode text"
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    if (_LINE_BREAKING if one_line else _CONTROL).search(value):
        return "contains control characters" + (" or line breaks" if one_line else "")
    return None


def _check_text(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_line(value: str) -> str:
    problem = text_problem(value, one_line=True)
    if problem:
        raise ValueError(problem)
    return value


# The same rules as JSON Schema patterns, so the OpenAPI document says what is accepted (generated
# clients and the schema fuzzer rely on it). Lone surrogates are left out of them: no UTF-8 text can
# carry one (only a JSON escape can), and regex engines differ on how to name them. Validation itself is
# the functions above.
TEXT_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]*$"
LINE_PATTERN = r"^[^\u0000-\u001f\u007f]*$"

#: Free text (a promotion's reason): any printable text, tabs and line breaks, up to ``max_length``.
SafeText = Annotated[str, AfterValidator(_check_text), Field(json_schema_extra={"pattern": TEXT_PATTERN})]
#: A name, a path, a URI: one line, no control characters.
SafeLine = Annotated[str, AfterValidator(_check_line), Field(json_schema_extra={"pattern": LINE_PATTERN})]


def safe_line(max_length: int, **field: Any) -> Any:
    """A ``SafeLine`` field of at most ``max_length`` characters (pass Field's other arguments)."""
    return Annotated[SafeLine, Field(max_length=max_length, **field)]


def check_json(value: Any, *, what: str = "value") -> Any:
    """Raise ValueError unless ``value`` (parsed JSON) is safe to store; returns it unchanged."""
    nodes = 0

    def walk(node: Any, path: str, depth: int) -> None:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_JSON_NODES:
            raise ValueError(f"{what} has more than {MAX_JSON_NODES} values; send less")
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"{path} is nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(node, str):
            _check_json_string(node, path)
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError(f"{path} is {node}, which JSON cannot hold; send a finite number")
        elif isinstance(node, dict):
            for key, item in node.items():
                _check_json_string(str(key), f"{path} (a key)")
                walk(item, f"{path}.{key}" if _printable_key(key) else f"{path}.<key>", depth + 1)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{path}[{index}]", depth + 1)

    walk(value, what, 0)
    return value


def _printable_key(key: Any) -> bool:
    return isinstance(key, str) and len(key) <= 64 and text_problem(key, one_line=True) is None


def _check_json_string(value: str, path: str) -> None:
    if len(value) > MAX_JSON_STRING:
        raise ValueError(f"{path} is {len(value)} characters long; at most {MAX_JSON_STRING} are kept")
    # Inside free-form data other control characters are harmless (JSON escapes them on the way out);
    # these two are what breaks storing or serving it.
    if _SURROGATE.search(value):
        raise ValueError(f"{path} contains a lone UTF-16 surrogate (\\ud800-\\udfff), not valid Unicode text")
    if "\x00" in value:
        raise ValueError(f"{path} contains a NUL character (\\u0000)")


def scrub(value: Any) -> Any:
    """``value`` with every string made storable and encodable: surrogates become U+FFFD, NULs go.

    For reads of rows that predate the rules above; what passes ``check_json`` is returned unchanged.
    """
    if isinstance(value, str):
        if _SURROGATE.search(value) or "\x00" in value:
            return _SURROGATE.sub("\ufffd", value).replace("\x00", "")
        return value
    if isinstance(value, dict):
        return {scrub(str(k)): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
