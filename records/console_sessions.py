"""The console's sign-in sessions: a browser that signed in with an API key.

The cookie carries a random token (256 bits); the table keeps its sha256, so a leaked database does not
leak live sessions, and the secret API key itself is never stored in the browser after sign-in. Every
request looks the session up with its key: a revoked key or an expired session is signed out at once.
Functions flush, never commit.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from records.orm import ApiKey, utcnow
from records.orm_console import ConsoleSession

MAX_TOKEN_LENGTH = 128


@dataclass(frozen=True)
class SignedIn:
    """A live session: the key it signed in with and the CSRF token its forms carry."""

    key_id: int
    key_name: str
    scopes: tuple[str, ...]
    csrf_token: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def open_session(session: Session, key: ApiKey, lifetime: timedelta) -> tuple[str, ConsoleSession]:
    """A new session for ``key``; returns the cookie token (shown only now) and the row."""
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(
        id=_hash(token),
        api_key_id=key.id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + lifetime,
    )
    session.add(row)
    # Expired rows of anyone are dropped now and then: sign-ins are rare enough to carry that.
    session.execute(sa.delete(ConsoleSession).where(ConsoleSession.expires_at < utcnow()))
    session.flush()
    return token, row


def find_session(session: Session, token: str) -> SignedIn | None:
    """The live session of this cookie token, or None (unknown, expired, or its key revoked)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    found = session.execute(
        sa.select(ConsoleSession, ApiKey)
        .join(ApiKey, ApiKey.id == ConsoleSession.api_key_id)
        .where(ConsoleSession.id == _hash(token))
    ).one_or_none()
    if found is None:
        return None
    row, key = found
    if key.revoked_at is not None or row.expires_at <= utcnow():
        return None
    return SignedIn(key.id, key.name, tuple(key.scopes), row.csrf_token)


def close_session(session: Session, token: str) -> None:
    """Sign out: the token stops working everywhere at once."""
    session.execute(sa.delete(ConsoleSession).where(ConsoleSession.id == _hash(token[:MAX_TOKEN_LENGTH])))
    session.flush()
