"""What the inference service needs on top of the initial schema.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 18:30:00

- ``bin_checks.probability_of_expected`` becomes nullable: a model without a class for the recorded count
  (a 1..5 "udacity" model asked about an empty bin, or a model without an overflow class asked about 12
  objects) has no probability to give, and storing 0.0 would read as "certainly wrong". Such checks get
  the verdict ``uncertain`` and NULL here (docs/verdicts.md).
- ``uq_model_versions_one_active``: a partial unique index over ``is_active`` where it is true, so the
  database itself guarantees one active model even when two promotions race on Postgres (read committed
  lets both "deactivate the others, activate mine" transactions succeed otherwise).
- ``ix_bins_last_verdict``: ``GET /v1/bins?last_verdict=mismatch`` is the service's main inventory query.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bin_checks") as batch:
        batch.alter_column("probability_of_expected", existing_type=sa.Double(), nullable=True)
    op.create_index(
        "uq_model_versions_one_active",
        "model_versions",
        ["is_active"],
        unique=True,
        postgresql_where=sa.text("is_active"),
        sqlite_where=sa.text("is_active"),
    )
    op.create_index(op.f("ix_bins_last_verdict"), "bins", ["last_verdict"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_bins_last_verdict"), table_name="bins")
    op.drop_index("uq_model_versions_one_active", table_name="model_versions")
    missing = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM bin_checks WHERE probability_of_expected IS NULL"))
        .scalar_one()
    )
    if missing:
        # Inventing a probability would rewrite history; make the operator decide what these rows mean.
        raise RuntimeError(
            f"{missing} bin checks have no probability_of_expected (recorded count outside the model's "
            "classes); delete or fill them before downgrading below 0002"
        )
    with op.batch_alter_table("bin_checks") as batch:
        batch.alter_column("probability_of_expected", existing_type=sa.Double(), nullable=False)
