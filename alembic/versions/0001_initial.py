"""Initial schema: API keys, bins and their checks, model versions and promotions, training jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 17:44:42

Generated with autogenerate against an empty Postgres database, then edited:
- column types are spelled with plain SQLAlchemy types (records.orm.UTCDateTime is ``DateTime(timezone=True)``
  in DDL), so this script keeps working whatever happens to the ORM module later;
- the training_jobs -> model_versions foreign key closes a cycle, so it is added once both tables exist
  (through batch mode, which on SQLite rebuilds the still-empty table) and dropped first on the way down.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, *, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("prefix", sa.String(length=12), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("last_used_at", nullable=True),
        _timestamp("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_prefix"), "api_keys", ["prefix"], unique=False)

    op.create_table(
        "bins",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("expected_count", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("items", sa.JSON(), nullable=True),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        sa.Column("last_verdict", sa.String(length=16), nullable=True),
        _timestamp("last_checked_at", nullable=True),
        sa.CheckConstraint("expected_count >= 0", name=op.f("ck_bins_expected_count_non_negative")),
        sa.CheckConstraint("source IN ('api', 'abid-metadata')", name=op.f("ck_bins_source")),
        sa.CheckConstraint(
            "last_verdict IN ('match', 'mismatch', 'uncertain')", name=op.f("ck_bins_last_verdict")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bins")),
    )

    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("dataset", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("promotion_policy", sa.String(length=16), nullable=False),
        sa.Column("epoch", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("celery_task_id", sa.String(length=255), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("promotion_decision", sa.Text(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        _timestamp("created_at", nullable=False),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        _timestamp("heartbeat_at", nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_training_jobs_status"),
        ),
        sa.CheckConstraint(
            "promotion_policy IN ('never', 'if_better', 'always')",
            name=op.f("ck_training_jobs_promotion_policy"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_jobs")),
    )
    op.create_index(
        "ix_training_jobs_status_created_at", "training_jobs", ["status", "created_at"], unique=False
    )

    op.create_table(
        "epoch_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Double(), nullable=False),
        sa.Column("val_loss", sa.Double(), nullable=True),
        sa.Column("val_accuracy", sa.Double(), nullable=True),
        sa.Column("val_rmse", sa.Double(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        _timestamp("created_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["training_jobs.id"],
            name=op.f("fk_epoch_metrics_job_id_training_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_epoch_metrics")),
        sa.UniqueConstraint("job_id", "epoch", name=op.f("uq_epoch_metrics_job_id_epoch")),
    )

    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("artifact_key", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("architecture", sa.String(length=64), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("preprocessing", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("plots", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("training_job_id", sa.String(length=36), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.false(), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("promoted_at", nullable=True),
        sa.CheckConstraint("source IN ('cli', 'job')", name=op.f("ck_model_versions_source")),
        sa.ForeignKeyConstraint(
            ["training_job_id"],
            ["training_jobs.id"],
            name=op.f("fk_model_versions_training_job_id_training_jobs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("training_job_id", name=op.f("uq_model_versions_training_job_id")),
    )
    op.create_index(op.f("ix_model_versions_is_active"), "model_versions", ["is_active"], unique=False)
    op.create_index(op.f("ix_model_versions_name"), "model_versions", ["name"], unique=False)

    with op.batch_alter_table("training_jobs") as batch:
        batch.create_foreign_key(
            op.f("fk_training_jobs_model_version_id_model_versions"),
            "model_versions",
            ["model_version_id"],
            ["id"],
            ondelete="SET NULL",
        )

    op.create_table(
        "bin_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bin_id", sa.String(length=128), nullable=False),
        sa.Column("image_key", sa.String(length=1024), nullable=False),
        sa.Column("expected_count", sa.Integer(), nullable=False),
        sa.Column("predicted_count", sa.Integer(), nullable=False),
        sa.Column("predicted_label", sa.String(length=16), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("probability_of_expected", sa.Double(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        _timestamp("created_at", nullable=False),
        sa.CheckConstraint(
            "verdict IN ('match', 'mismatch', 'uncertain')", name=op.f("ck_bin_checks_verdict")
        ),
        sa.ForeignKeyConstraint(
            ["bin_id"], ["bins.id"], name=op.f("fk_bin_checks_bin_id_bins"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_bin_checks_model_version_id_model_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bin_checks")),
    )
    op.create_index("ix_bin_checks_bin_id_created_at", "bin_checks", ["bin_id", "created_at"], unique=False)
    op.create_index(op.f("ix_bin_checks_model_version_id"), "bin_checks", ["model_version_id"], unique=False)

    op.create_table(
        "promotions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        _timestamp("promoted_at", nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_promotions_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotions")),
    )
    op.create_index(op.f("ix_promotions_model_version_id"), "promotions", ["model_version_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_promotions_model_version_id"), table_name="promotions")
    op.drop_table("promotions")
    op.drop_index(op.f("ix_bin_checks_model_version_id"), table_name="bin_checks")
    op.drop_index("ix_bin_checks_bin_id_created_at", table_name="bin_checks")
    op.drop_table("bin_checks")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_constraint(op.f("fk_training_jobs_model_version_id_model_versions"), type_="foreignkey")
    op.drop_index(op.f("ix_model_versions_name"), table_name="model_versions")
    op.drop_index(op.f("ix_model_versions_is_active"), table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_table("epoch_metrics")
    op.drop_index("ix_training_jobs_status_created_at", table_name="training_jobs")
    op.drop_table("training_jobs")
    op.drop_table("bins")
    op.drop_index(op.f("ix_api_keys_prefix"), table_name="api_keys")
    op.drop_table("api_keys")
