"""The tables, as SQLAlchemy 2.0 typed ORM classes, portable across Postgres and SQLite.

Conventions worth knowing before writing queries:

- Timestamps are timezone-aware UTC ``datetime`` objects on both dialects (see ``UTCDateTime``); use
  ``utcnow()``, never ``datetime.utcnow()`` (naive values are rejected).
- JSON columns are ``sa.JSON`` (json on Postgres, text on SQLite). In-place mutation
  (``job.params["lr"] = 1``) is not tracked: assign a new value (``job.params = {**job.params, "lr": 1}``).
- Bin ids are strings and compared as strings: ``"00121"`` and ``"121"`` are different bins.
- The enumerated string columns have CHECK constraints; the allowed values are the tuples below.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCOPES = ("predict", "inventory", "train", "admin")
# "review": corrected by a person reviewing a check in the console (records/reviews.py).
BIN_SOURCES = ("api", "abid-metadata", "review")
VERDICTS = ("match", "mismatch", "uncertain")
MODEL_SOURCES = ("cli", "job")
# "pruned": a tuning trial (records/tuning_jobs.py) that the study's pruner stopped early.
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "pruned")
JOB_FINISHED_STATUSES = ("succeeded", "failed", "cancelled", "pruned")
TUNING_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TUNING_FINISHED_STATUSES = ("succeeded", "failed", "cancelled")
PROMOTION_POLICIES = ("never", "if_better", "always")

# Deterministic constraint names on both dialects, so later migrations can drop or alter them by name
# (SQLite otherwise leaves them unnamed, and batch migrations cannot refer to them).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC: the default for every timestamp column."""
    return datetime.now(UTC)


def new_job_id() -> str:
    """A training job id: a uuid4 as 32 hex digits."""
    return uuid.uuid4().hex


def _one_of(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is always stored and returned as aware UTC.

    Postgres keeps the offset (``timestamptz``) but returns values in the session's time zone; SQLite
    keeps no offset at all and returns naive values, and mixing naive and aware datetimes raises
    ``TypeError`` in the worker's heartbeat arithmetic. Normalising here gives both dialects one shape.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} for a UTC column; use records.orm.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# none_as_null: Python None is stored as SQL NULL, not as the JSON text 'null', so "IS NULL" finds it
# and a missing value in a required column fails loudly instead of storing 'null'.
JSONColumn = sa.JSON(none_as_null=True)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class ApiKey(Base):
    """A client credential. Only the sha256 of the secret is stored; ``prefix`` is what users see."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    # Not unique: prefixes are short and may collide; lookups narrow by prefix and then compare hashes.
    prefix: Mapped[str] = mapped_column(sa.String(12), index=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSONColumn, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Bin(Base):
    """A bin's recorded inventory: what the warehouse system says should be inside."""

    __tablename__ = "bins"
    __table_args__ = (
        sa.CheckConstraint("expected_count >= 0", name="expected_count_non_negative"),
        sa.CheckConstraint(_one_of("source", BIN_SOURCES), name="source"),
        sa.CheckConstraint(_one_of("last_verdict", VERDICTS), name="last_verdict"),
    )

    id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    expected_count: Mapped[int]
    source: Mapped[str] = mapped_column(sa.String(32))
    # ABID's BIN_FCSKU_DATA entries, kept as they came so item-level views need no second source.
    items: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONColumn)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    last_verdict: Mapped[str | None] = mapped_column(sa.String(16), index=True)
    # The check whose verdict last_verdict is. A plain integer, not a foreign key: bin_checks already
    # points at bins, and a second edge back would make the two tables a cycle for every insert.
    last_verdict_check_id: Mapped[int | None]
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    checks: Mapped[list[BinCheck]] = relationship(
        back_populates="bin", cascade="all, delete-orphan", passive_deletes=True, order_by="BinCheck.id"
    )


class BinCheck(Base):
    """One photo of a bin, the model's count distribution for it, and the verdict against the record."""

    __tablename__ = "bin_checks"
    __table_args__ = (
        sa.Index("ix_bin_checks_bin_id_created_at", "bin_id", "created_at"),
        sa.CheckConstraint(_one_of("verdict", VERDICTS), name="verdict"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    bin_id: Mapped[str] = mapped_column(sa.ForeignKey("bins.id", ondelete="CASCADE"))
    image_key: Mapped[str] = mapped_column(sa.String(1024))
    # The recorded count when the check ran; the bin's own count may have changed since.
    expected_count: Mapped[int]
    predicted_count: Mapped[int]
    predicted_label: Mapped[str] = mapped_column(sa.String(16))
    probabilities: Mapped[dict[str, float]] = mapped_column(JSONColumn)
    # NULL when the model has no class for the recorded count (verdict "uncertain"; docs/verdicts.md).
    probability_of_expected: Mapped[float | None] = mapped_column(sa.Double())
    verdict: Mapped[str] = mapped_column(sa.String(16))
    thresholds: Mapped[dict[str, float]] = mapped_column(JSONColumn)
    # What the thresholds were applied to (model/verdicts.py) and their risk in words (migration 0007);
    # NULL on older checks, all judged by "probability".
    score: Mapped[float | None] = mapped_column(sa.Double())
    judged_by: Mapped[str | None] = mapped_column(sa.String(32))
    risk: Mapped[str | None] = mapped_column(sa.String(500))
    # SET NULL: deleting an old model version must not erase the inventory history it produced.
    model_version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("model_versions.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    bin: Mapped[Bin] = relationship(back_populates="checks")
    model_version: Mapped[ModelVersion | None] = relationship()


class ModelVersion(Base):
    """A trained checkpoint in the artifact store, with what is needed to load and judge it."""

    __tablename__ = "model_versions"
    __table_args__ = (
        sa.CheckConstraint(_one_of("source", MODEL_SOURCES), name="source"),
        # At most one active version, enforced by the database (migration 0002): concurrent promotions on
        # Postgres would otherwise both succeed and leave two active rows.
        sa.Index(
            "uq_model_versions_one_active",
            "is_active",
            unique=True,
            postgresql_where=sa.text("is_active"),
            sqlite_where=sa.text("is_active"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128), index=True)
    artifact_key: Mapped[str] = mapped_column(sa.String(1024))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    architecture: Mapped[str] = mapped_column(sa.String(64))
    classes: Mapped[list[str]] = mapped_column(JSONColumn)
    preprocessing: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONColumn, default=dict)
    plots: Mapped[dict[str, str]] = mapped_column(JSONColumn, default=dict)
    # The verdict thresholds measured on its validation split (model/operating_points.py); NULL for
    # versions registered before they were stored.
    operating_points: Mapped[dict[str, Any] | None] = mapped_column(JSONColumn)
    source: Mapped[str] = mapped_column(sa.String(16))
    # Unique: a job registers exactly one version, even if its task is retried after a crash.
    training_job_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("training_jobs.id", ondelete="SET NULL"), unique=True
    )
    is_active: Mapped[bool] = mapped_column(default=False, server_default=sa.false(), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    training_job: Mapped[TrainingJob | None] = relationship(foreign_keys=[training_job_id])
    promotions: Mapped[list[Promotion]] = relationship(
        back_populates="model_version",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Promotion.id",
    )


class Promotion(Base):
    """One promotion of a model version to active: who, when and why (the history behind is_active)."""

    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        sa.ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    promoted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(sa.String(128))
    reason: Mapped[str] = mapped_column(sa.Text)

    model_version: Mapped[ModelVersion] = relationship(back_populates="promotions")


class TrainingJob(Base):
    """A training run requested through the API and executed by a worker."""

    __tablename__ = "training_jobs"
    __table_args__ = (
        sa.CheckConstraint(_one_of("status", JOB_STATUSES), name="status"),
        sa.CheckConstraint(_one_of("promotion_policy", PROMOTION_POLICIES), name="promotion_policy"),
        sa.Index("ix_training_jobs_status_created_at", "status", "created_at"),
        sa.CheckConstraint("nodes >= 1", name="nodes"),
        sa.CheckConstraint("procs_per_node >= 1", name="procs_per_node"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_job_id)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    dataset: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    params: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    promotion_policy: Mapped[str] = mapped_column(sa.String(16))
    # Hosts and processes on each that train the job as one DDP group (records/job_groups.py).
    nodes: Mapped[int] = mapped_column(default=1, server_default=sa.text("1"))
    procs_per_node: Mapped[int] = mapped_column(default=1, server_default=sa.text("1"))
    # The group running it now: a new one each time a worker claims a multi-process job.
    group_id: Mapped[str | None] = mapped_column(sa.String(32))
    epoch: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    epochs: Mapped[int]
    host: Mapped[str | None] = mapped_column(sa.String(255))
    error: Mapped[str | None] = mapped_column(sa.Text)
    celery_task_id: Mapped[str | None] = mapped_column(sa.String(255))
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    promotion_decision: Mapped[str | None] = mapped_column(sa.Text)
    # use_alter: model_versions.training_job_id points back here, and one of the two foreign keys has to
    # be added after both tables exist.
    model_version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("model_versions.id", ondelete="SET NULL", use_alter=True)
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # How many times a worker has taken the job (claim_job); a job whose worker keeps dying stops at
    # BINWATCH_JOB_MAX_ATTEMPTS instead of being handed out forever.
    attempts: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    # A trial of a tuning job: its study and (once a worker asked Optuna for it) its trial number.
    tuning_job_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("tuning_jobs.id", ondelete="CASCADE"), index=True
    )
    trial_number: Mapped[int | None]
    # What the job's runs used and cost: one entry per worker run (records/costs.py).
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSONColumn)

    # post_update: a job and its version can be inserted in one flush although each points at the other;
    # this side's UPDATE runs after both rows exist.
    model_version: Mapped[ModelVersion | None] = relationship(
        foreign_keys=[model_version_id], post_update=True
    )
    epoch_metrics: Mapped[list[EpochMetric]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True, order_by="EpochMetric.epoch"
    )

    def __init__(self, **kwargs: Any) -> None:
        # The id exists from construction on, not only after a flush: the API hands it to Celery and to
        # the client in the same request that creates the row.
        kwargs.setdefault("id", new_job_id())
        super().__init__(**kwargs)


class TrainingJobNode(Base):
    """A worker that joined a training job's group as node ``node_rank`` (records/job_groups.py)."""

    __tablename__ = "training_job_nodes"

    group_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    node_rank: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    # Where the other nodes reach this one; on rank 0 with the port of the group's store.
    address: Mapped[str] = mapped_column(sa.String(255))
    port: Mapped[int | None]
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TuningJob(Base):
    """A hyperparameter study run as training jobs (its trials) on the workers; records/tuning_jobs.py."""

    __tablename__ = "tuning_jobs"
    __table_args__ = (
        sa.CheckConstraint(_one_of("status", TUNING_STATUSES), name="status"),
        sa.CheckConstraint(_one_of("promotion_policy", PROMOTION_POLICIES), name="promotion_policy"),
        sa.Index("ix_tuning_jobs_status_created_at", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_job_id)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    dataset: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    # hyperparameters, the resolved base config, space, objective, pruner, seed, model_name, submitted_by
    params: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    trials: Mapped[int]
    parallelism: Mapped[int]
    timeout_s: Mapped[int | None]
    promotion_policy: Mapped[str] = mapped_column(sa.String(16))
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    promotion_decision: Mapped[str | None] = mapped_column(sa.Text)
    best_trial: Mapped[int | None]
    # use_alter: model_versions -> training_jobs -> tuning_jobs -> model_versions is a cycle.
    model_version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("model_versions.id", ondelete="SET NULL", use_alter=True)
    )
    # Where the study's pictures are in the artifact store (name -> key), once it ended.
    pictures: Mapped[dict[str, str]] = mapped_column(JSONColumn, default=dict)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("id", new_job_id())
        super().__init__(**kwargs)

    @property
    def study_name(self) -> str:
        return f"binwatch-tuning-{self.id}"


class EpochMetric(Base):
    """The losses and metrics of one finished training epoch."""

    __tablename__ = "epoch_metrics"
    # Unique: a retried task must not log an epoch twice; the worker upserts or skips instead.
    __table_args__ = (sa.UniqueConstraint("job_id", "epoch"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("training_jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int]
    train_loss: Mapped[float] = mapped_column(sa.Double())
    val_loss: Mapped[float | None] = mapped_column(sa.Double())
    val_accuracy: Mapped[float | None] = mapped_column(sa.Double())
    val_rmse: Mapped[float | None] = mapped_column(sa.Double())
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONColumn, default=dict)
    duration_s: Mapped[float] = mapped_column(sa.Double())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    job: Mapped[TrainingJob] = relationship(back_populates="epoch_metrics")


class IdempotencyRecord(Base):
    """The stored answer to a POST sent with an ``Idempotency-Key`` header (api/idempotency.py).

    Written in the same transaction as what the request stored, so a retry after a lost response finds
    either both (and gets the first answer back) or neither (and stores it now): never one twice.
    Keys are per API key: two clients can never see each other's answers.
    """

    __tablename__ = "idempotency_records"
    __table_args__ = (sa.UniqueConstraint("api_key_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    api_key_id: Mapped[int] = mapped_column(sa.ForeignKey("api_keys.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(sa.String(255))
    # "POST /v1/bins/{bin_id}/checks" with the path filled in: a key reused on another route is refused.
    operation: Mapped[str] = mapped_column(sa.String(512))
    # sha256 of the request body: a key reused with a different body is refused.
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    status_code: Mapped[int]
    response: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


# The console's tables share this Base; importing them here keeps Base.metadata (Alembic, tests) whole.
from records import orm_console  # noqa: E402, F401
