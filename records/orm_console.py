"""The console's tables: people's reviews of checks, and the console's sign-in sessions.

Kept apart from records/orm.py (same ``Base``, same conventions) because they belong to one capability,
the operator's console (api/console/); records/orm.py imports this module so the metadata is whole.

- ``check_reviews``: every review ever made, never updated (a check's review is its latest row, by id).
  Keeping them all is the audit trail (who said what, when), and it makes "the reviews made before time
  T" a fixed set: a training job pinned to T sees the same photos and counts however the checks are
  reviewed afterwards. ``seen_count`` is the count a person confirmed or entered; it is NULL when the
  photo was marked unusable. Reviewed checks with a count are a training dataset
  (records/review_dataset.py).
- ``console_sessions``: a signed-in browser. The cookie holds a random token; only its sha256 is stored,
  like API keys. A session lives no longer than its key: a revoked key ends it at the next request.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from records.orm import ApiKey, Base, BinCheck, UTCDateTime, _one_of, utcnow

REVIEW_OUTCOMES = ("confirmed", "counted", "unusable")


class CheckReview(Base):
    """What a person said about a check's photo."""

    __tablename__ = "check_reviews"
    __table_args__ = (
        sa.CheckConstraint(_one_of("outcome", REVIEW_OUTCOMES), name="outcome"),
        sa.CheckConstraint("seen_count IS NULL OR seen_count >= 0", name="seen_count"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    check_id: Mapped[int] = mapped_column(sa.ForeignKey("bin_checks.id", ondelete="CASCADE"), index=True)
    bin_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    outcome: Mapped[str] = mapped_column(sa.String(16))
    seen_count: Mapped[int | None]
    # The bin's recorded count when the review was made, and whether the review changed it.
    recorded_count: Mapped[int]
    corrected_record: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    reviewer: Mapped[str] = mapped_column(sa.String(200))
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

    check: Mapped[BinCheck] = relationship()


class ConsoleSession(Base):
    """A browser signed in to the console with an API key."""

    __tablename__ = "console_sessions"

    # sha256 of the cookie's token.
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    api_key_id: Mapped[int] = mapped_column(sa.ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

    api_key: Mapped[ApiKey] = relationship()
