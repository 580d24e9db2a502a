"""Multi-node training jobs (issue 13, docs/training.md "Multi-node training jobs").

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 08:00:00

- ``training_jobs.nodes`` / ``procs_per_node``: how many hosts, and processes on each, train the job as
  one DDP group.
- ``training_jobs.group_id``: the group now running it (a new one each time a worker claims the job).
- ``training_job_nodes``: the workers that joined a group, one row per node rank, with the address they
  publish (rank 0's row carries the port of the group's store, which the others connect to).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("nodes", sa.Integer(), server_default=sa.text("1"), nullable=False))
        batch.add_column(
            sa.Column("procs_per_node", sa.Integer(), server_default=sa.text("1"), nullable=False)
        )
        batch.add_column(sa.Column("group_id", sa.String(length=32), nullable=True))
        batch.create_check_constraint(batch.f("ck_training_jobs_nodes"), sa.text("nodes >= 1"))
        batch.create_check_constraint(
            batch.f("ck_training_jobs_procs_per_node"), sa.text("procs_per_node >= 1")
        )
    op.create_table(
        "training_job_nodes",
        sa.Column("group_id", sa.String(length=32), nullable=False),
        sa.Column("node_rank", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["training_jobs.id"],
            name=op.f("fk_training_job_nodes_job_id_training_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "node_rank", name=op.f("pk_training_job_nodes")),
    )
    op.create_index(op.f("ix_training_job_nodes_job_id"), "training_job_nodes", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_training_job_nodes_job_id"), table_name="training_job_nodes")
    op.drop_table("training_job_nodes")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_constraint(batch.f("ck_training_jobs_procs_per_node"), type_="check")
        batch.drop_constraint(batch.f("ck_training_jobs_nodes"), type_="check")
        batch.drop_column("group_id")
        batch.drop_column("procs_per_node")
        batch.drop_column("nodes")
