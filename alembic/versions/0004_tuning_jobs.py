"""Hyperparameter tuning jobs (issue 12, docs/tuning.md).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 04:00:00

- ``tuning_jobs``: a study run as training jobs on the workers.
- ``training_jobs.tuning_job_id`` / ``trial_number``: which study a training job is a trial of.
- ``training_jobs.usage``: where each run of the job ran, its phases' wall time and estimated cost.
- ``training_jobs.status`` may be ``pruned`` (a trial the study's pruner stopped early).
- On Postgres, the ``optuna`` schema: Optuna keeps its study tables (and an ``alembic_version`` table of
  its own, which would collide with ours) there, in the same database (records/tuning_storage.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"
NEW_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'pruned')"


def upgrade() -> None:
    op.create_table(
        "tuning_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("dataset", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("params", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("trials", sa.Integer(), nullable=False),
        sa.Column("parallelism", sa.Integer(), nullable=False),
        sa.Column("timeout_s", sa.Integer(), nullable=True),
        sa.Column("promotion_policy", sa.String(length=16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("promotion_decision", sa.Text(), nullable=True),
        sa.Column("best_trial", sa.Integer(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("pictures", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_tuning_jobs_status"),
        ),
        sa.CheckConstraint(
            "promotion_policy IN ('never', 'if_better', 'always')",
            name=op.f("ck_tuning_jobs_promotion_policy"),
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_tuning_jobs_model_version_id_model_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tuning_jobs")),
    )
    op.create_index("ix_tuning_jobs_status_created_at", "tuning_jobs", ["status", "created_at"], unique=False)
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("tuning_job_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("trial_number", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("usage", sa.JSON(none_as_null=True), nullable=True))
        batch.create_index(batch.f("ix_training_jobs_tuning_job_id"), ["tuning_job_id"], unique=False)
        batch.create_foreign_key(
            batch.f("fk_training_jobs_tuning_job_id_tuning_jobs"),
            "tuning_jobs",
            ["tuning_job_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.drop_constraint(batch.f("ck_training_jobs_status"), type_="check")
        batch.create_check_constraint(batch.f("ck_training_jobs_status"), sa.text(NEW_STATUSES))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SCHEMA IF NOT EXISTS optuna")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SCHEMA IF EXISTS optuna CASCADE")
    op.execute("DELETE FROM training_jobs WHERE tuning_job_id IS NOT NULL")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_constraint(batch.f("ck_training_jobs_status"), type_="check")
        batch.create_check_constraint(batch.f("ck_training_jobs_status"), sa.text(OLD_STATUSES))
        batch.drop_constraint(batch.f("fk_training_jobs_tuning_job_id_tuning_jobs"), type_="foreignkey")
        batch.drop_index(batch.f("ix_training_jobs_tuning_job_id"))
        batch.drop_column("usage")
        batch.drop_column("trial_number")
        batch.drop_column("tuning_job_id")
    op.drop_index("ix_tuning_jobs_status_created_at", table_name="tuning_jobs")
    op.drop_table("tuning_jobs")
