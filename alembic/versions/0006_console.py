"""The operator's console (issue 14, docs/console.md): reviews of checks and sign-in sessions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 11:00:00

- ``check_reviews``: what a person said about a check's photo (confirmed the record, counted it
  themselves, or marked it unusable), who and when; every review is kept, the latest per check counts.
- ``console_sessions``: signed-in browsers (sha256 of the cookie's token, the API key, the CSRF token).
- ``bins.source`` may now be ``review``: a record corrected in a review.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _sources(*values: str) -> sa.TextClause:
    return sa.text("source IN (" + ", ".join(f"'{v}'" for v in values) + ")")


def upgrade() -> None:
    with op.batch_alter_table("bins") as batch:
        batch.drop_constraint(batch.f("ck_bins_source"), type_="check")
        batch.create_check_constraint(batch.f("ck_bins_source"), _sources("api", "abid-metadata", "review"))
    op.create_table(
        "check_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("check_id", sa.Integer(), nullable=False),
        sa.Column("bin_id", sa.String(length=128), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("seen_count", sa.Integer(), nullable=True),
        sa.Column("recorded_count", sa.Integer(), nullable=False),
        sa.Column("corrected_record", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("reviewer", sa.String(length=200), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('confirmed', 'counted', 'unusable')", name=op.f("ck_check_reviews_outcome")
        ),
        sa.CheckConstraint("seen_count IS NULL OR seen_count >= 0", name=op.f("ck_check_reviews_seen_count")),
        sa.ForeignKeyConstraint(
            ["check_id"],
            ["bin_checks.id"],
            name=op.f("fk_check_reviews_check_id_bin_checks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_check_reviews")),
    )
    op.create_index(op.f("ix_check_reviews_check_id"), "check_reviews", ["check_id"], unique=False)
    op.create_index(op.f("ix_check_reviews_bin_id"), "check_reviews", ["bin_id"], unique=False)
    op.create_index(op.f("ix_check_reviews_reviewed_at"), "check_reviews", ["reviewed_at"], unique=False)
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_console_sessions_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
    )
    op.create_index(op.f("ix_console_sessions_api_key_id"), "console_sessions", ["api_key_id"], unique=False)
    op.create_index(op.f("ix_console_sessions_expires_at"), "console_sessions", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_console_sessions_expires_at"), table_name="console_sessions")
    op.drop_index(op.f("ix_console_sessions_api_key_id"), table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_index(op.f("ix_check_reviews_reviewed_at"), table_name="check_reviews")
    op.drop_index(op.f("ix_check_reviews_bin_id"), table_name="check_reviews")
    op.drop_index(op.f("ix_check_reviews_check_id"), table_name="check_reviews")
    op.drop_table("check_reviews")
    op.execute("UPDATE bins SET source = 'api' WHERE source = 'review'")
    with op.batch_alter_table("bins") as batch:
        batch.drop_constraint(batch.f("ck_bins_source"), type_="check")
        batch.create_check_constraint(batch.f("ck_bins_source"), _sources("api", "abid-metadata"))
