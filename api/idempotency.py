"""``Idempotency-Key`` on the POSTs that store something (checks, training-job submissions).

A client whose response was lost (timeout, a proxy reset, the API killed after its commit) retries with
the same key and gets the first answer back, with ``Idempotent-Replayed: true``; nothing is stored twice.
The answer is stored in the same transaction as what the request stored (records/idempotency.py), so
there is no moment at which one exists without the other.

- A key is bound to one API key, one operation (method and path) and one request body (its sha256):
  reusing it for anything else is a 422, never a silent replay of another request's answer.
- Two requests racing with one key: the database's unique constraint lets one store; the other rolls
  back and replays the winner's answer.
- Errors are not stored: a request that failed stored nothing, so its retry simply runs again.

Predictions store nothing, PUT is idempotent by definition, and promote / cancel change nothing when
repeated, so they take no key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.problems import URN, Problem
from records import idempotency

#: The key was used before with a different request (operation or body).
IDEMPOTENCY_KEY_REUSED = URN + "idempotency-key-reused"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="Makes a retry safe: a request repeated with the same key (and the same body) within "
        "24 h returns the first answer, with `Idempotent-Replayed: true`, and stores nothing again. "
        "1-255 printable ASCII characters; a random UUID per logical request is a good choice.",
    ),
]


@dataclass(frozen=True)
class IdempotentRequest:
    api_key_id: int
    key: str
    operation: str
    request_hash: str


def fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        # Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def request_for(
    key: str | None, api_key_id: int, operation: str, *parts: bytes | str
) -> IdempotentRequest | None:
    return None if key is None else IdempotentRequest(api_key_id, key, operation, fingerprint(*parts))


def replay(
    session: Session, request: IdempotentRequest | None, headers: dict[str, str] | None = None
) -> JSONResponse | None:
    """The stored answer to ``request``, or None when there is none; 422 when the key was used for
    another request."""
    if request is None:
        return None
    record = idempotency.find(session, request.api_key_id, request.key)
    if record is None:
        return None
    if record.operation != request.operation or record.request_hash != request.request_hash:
        raise Problem(
            422,
            f"Idempotency-Key {request.key!r} was already used for a different request "
            f"({record.operation}, {'another body' if record.operation == request.operation else 'its body'})"
            "; send a new key for a new request",
            type=IDEMPOTENCY_KEY_REUSED,
            title="Idempotency key reused",
        )
    return JSONResponse(
        record.response, status_code=record.status_code, headers={REPLAYED_HEADER: "true", **(headers or {})}
    )


def remember(session: Session, request: IdempotentRequest | None, status_code: int, response: Any) -> None:
    """Store the answer in the caller's transaction (no-op without a key)."""
    if request is None:
        return
    idempotency.remember(
        session,
        api_key_id=request.api_key_id,
        key=request.key,
        operation=request.operation,
        request_hash=request.request_hash,
        status_code=status_code,
        response=response,
    )
