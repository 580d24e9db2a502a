"""Verdicts judged by a score and a version's own operating points (issue 22, docs/verdicts.md).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 19:00:00

- ``model_versions.operating_points``: the verdict thresholds measured on the version's validation split
  (model/operating_points.py), NULL for versions registered before they were stored.
- ``bin_checks.score`` / ``judged_by`` / ``risk``: the number the thresholds were applied to, which score it
  is (``neighbour_ratio`` or ``probability``), and the risk of the thresholds in words. NULL on older
  checks, which were all judged by ``probability``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("operating_points", sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table("bin_checks") as batch:
        batch.add_column(sa.Column("score", sa.Double(), nullable=True))
        batch.add_column(sa.Column("judged_by", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("risk", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bin_checks") as batch:
        batch.drop_column("risk")
        batch.drop_column("judged_by")
        batch.drop_column("score")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("operating_points")
