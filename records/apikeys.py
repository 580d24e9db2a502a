"""API keys: creation, lookup, revocation and scopes.

A key is ``bw_`` followed by 32 url-safe random characters (192 bits). Only its sha256 is stored: a key
with that much entropy needs no slow password hash, and lookups go straight through the unique index on
``key_hash``. The first 11 characters (``prefix``) are kept in clear so people can tell keys apart.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from records.orm import SCOPES, ApiKey, utcnow

KEY_PREFIX = "bw_"
PREFIX_LENGTH = 11  # "bw_" + 8 characters; fits ApiKey.prefix (12)
# last_used_at is informational; writing it on every request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
BOOTSTRAP_KEY_NAME = "bootstrap-admin"


class ApiKeyNotFound(LookupError):
    """No API key has that id or prefix."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class NewApiKey:
    """A freshly created key: the row and the secret, which is never stored and cannot be shown again."""

    record: ApiKey
    secret: str


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def validate_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; choose from {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError(f"a key needs at least one scope ({', '.join(SCOPES)})")
    # Keep the canonical order so listings read the same whatever order they were given in.
    return [scope for scope in SCOPES if scope in scopes]


def create_api_key(session: Session, name: str, scopes: list[str] | tuple[str, ...]) -> NewApiKey:
    """Add a key (flushed, not committed) and return it with its secret."""
    if not name.strip():
        raise ValueError("an API key needs a name")
    secret = KEY_PREFIX + secrets.token_urlsafe(24)
    record = ApiKey(
        name=name.strip()[:128],
        prefix=secret[:PREFIX_LENGTH],
        key_hash=hash_key(secret),
        scopes=validate_scopes(scopes),
    )
    session.add(record)
    session.flush()
    return NewApiKey(record=record, secret=secret)


def authenticate(session: Session, secret: str) -> ApiKey | None:
    """The active (not revoked) key with this secret, or None. Touches ``last_used_at`` now and then."""
    if not secret.startswith(KEY_PREFIX) or len(secret) > 256:
        return None
    key = session.scalars(sa.select(ApiKey).where(ApiKey.key_hash == hash_key(secret))).one_or_none()
    if key is None or key.revoked_at is not None:
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
        session.flush()
    return key


def has_scope(key: ApiKey, scope: str) -> bool:
    """Whether ``key`` may use ``scope``; admin keys may use every scope."""
    return scope in key.scopes or "admin" in key.scopes


def list_api_keys(session: Session, include_revoked: bool = False) -> list[ApiKey]:
    query = sa.select(ApiKey).order_by(ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))


def find_api_key(session: Session, ref: str) -> ApiKey:
    """A key by numeric id or by its prefix (``bw_AbCdEfGh``); prefixes must be unambiguous."""
    if ref.isdigit():
        key = session.get(ApiKey, int(ref))
        if key is None:
            raise ApiKeyNotFound(f"no API key with id {ref}")
        return key
    matches = list(session.scalars(sa.select(ApiKey).where(ApiKey.prefix == ref[:PREFIX_LENGTH])))
    if not matches:
        raise ApiKeyNotFound(f"no API key with prefix {ref!r}")
    if len(matches) > 1:
        ids = ", ".join(str(k.id) for k in matches)
        raise ApiKeyNotFound(f"prefix {ref!r} matches several keys (ids {ids}); use the id")
    return matches[0]


def revoke_api_key(session: Session, ref: str) -> ApiKey:
    """Revoke a key by id or prefix; revoking twice keeps the first revocation time."""
    key = find_api_key(session, ref)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def bootstrap_admin_key(session: Session) -> NewApiKey | None:
    """Create the first admin key when the database has never had any key; None otherwise.

    Revoked keys count as "had one": once an operator has managed keys, restarting the service must not
    mint a new admin credential behind their back.
    """
    if session.scalar(sa.select(sa.func.count()).select_from(ApiKey)):
        return None
    return create_api_key(session, BOOTSTRAP_KEY_NAME, ["admin"])
