"""Registering model versions and promoting one to active: the one place that writes ``is_active``.

The API processes poll for the active version and swap to it (api/model_manager.py); promotion is
therefore nothing more than a committed ``is_active`` flip plus a ``promotions`` history row.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from records.orm import ModelVersion, Promotion, utcnow

# Serialises promotions on Postgres (transaction-scoped advisory lock). The partial unique index
# uq_model_versions_one_active would reject the loser of a race anyway; the lock makes it wait instead.
POSTGRES_PROMOTION_LOCK = 0x62775072  # "bwPr"


def active_version(session: Session) -> ModelVersion | None:
    return session.scalar(sa.select(ModelVersion).where(ModelVersion.is_active.is_(True)))


def version_for_job(session: Session, job_id: str) -> ModelVersion | None:
    return session.scalar(sa.select(ModelVersion).where(ModelVersion.training_job_id == job_id))


def register_version(
    session: Session,
    *,
    name: str,
    artifact_key: str,
    sha256: str,
    architecture: str,
    classes: list[str],
    preprocessing: dict[str, Any],
    metrics: dict[str, Any],
    plots: dict[str, str],
    source: str,
    training_job_id: str | None = None,
    operating_points: dict[str, Any] | None = None,
) -> ModelVersion:
    """Insert a (not yet active) version and flush it; a second one for the same job violates a unique key."""
    version = ModelVersion(
        name=name,
        artifact_key=artifact_key,
        sha256=sha256,
        architecture=architecture,
        classes=classes,
        preprocessing=preprocessing,
        metrics=metrics,
        plots=plots,
        source=source,
        training_job_id=training_job_id,
        operating_points=operating_points,
        is_active=False,
    )
    session.add(version)
    session.flush()
    return version


def lock_promotions(session: Session) -> None:
    """Hold the promotion lock until the transaction ends (Postgres; SQLite serialises writers anyway)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_PROMOTION_LOCK})


def promote(session: Session, version: ModelVersion, *, actor: str, reason: str) -> Promotion:
    """Make ``version`` the active one (in the caller's transaction) and record who and why."""
    lock_promotions(session)
    now = utcnow()
    # Deactivate first and flush: the partial unique index allows one active row at any moment.
    session.execute(
        sa.update(ModelVersion)
        .where(ModelVersion.is_active.is_(True), ModelVersion.id != version.id)
        .values(is_active=False)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    version.is_active = True
    version.promoted_at = now
    promotion = Promotion(model_version_id=version.id, promoted_at=now, actor=actor, reason=reason)
    session.add(promotion)
    session.flush()
    return promotion
