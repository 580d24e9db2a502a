"""Stored answers to POSTs sent with an ``Idempotency-Key`` (the API side is api/idempotency.py).

A record is written in the same transaction as what its request stored, and holds the response that
request got. Keys belong to one API key and live ``RETENTION`` (24 h, like Stripe's); after that a retry
with an old key is a new request. Functions flush but never commit: the caller owns the transaction.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from records.orm import IdempotencyRecord, utcnow

RETENTION = timedelta(hours=24)


def find(session: Session, api_key_id: int, key: str) -> IdempotencyRecord | None:
    """The live record for ``key`` of this API key, or None (never stored, or older than RETENTION)."""
    return session.scalar(
        sa.select(IdempotencyRecord).where(
            IdempotencyRecord.api_key_id == api_key_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.created_at >= utcnow() - RETENTION,
        )
    )


def remember(
    session: Session,
    *,
    api_key_id: int,
    key: str,
    operation: str,
    request_hash: str,
    status_code: int,
    response: dict[str, Any],
) -> IdempotencyRecord:
    """Store the answer; a concurrent request that stored one first makes the flush (or the commit) raise
    ``IntegrityError`` on the (api_key_id, key) unique constraint: roll back and replay theirs."""
    # Expired records of this key would block the insert; so would nothing else, so drop only those.
    session.execute(
        sa.delete(IdempotencyRecord)
        .where(IdempotencyRecord.created_at < utcnow() - RETENTION)
        .execution_options(synchronize_session=False)
    )
    record = IdempotencyRecord(
        api_key_id=api_key_id,
        key=key,
        operation=operation,
        request_hash=request_hash,
        status_code=status_code,
        response=response,
    )
    session.add(record)
    session.flush()
    return record


def forget(session: Session, api_key_id: int, key: str) -> None:
    """Drop a record whose request turned out not to have happened (its job could not be queued)."""
    session.execute(
        sa.delete(IdempotencyRecord)
        .where(IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key)
        .execution_options(synchronize_session=False)
    )
