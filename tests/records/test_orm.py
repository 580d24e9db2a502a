"""The ORM against migrated databases: rows round-trip, and the constraints the services rely on hold."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from records.db import make_engine, make_session_factory, session_scope
from records.migrate import upgrade_database
from records.orm import (
    ApiKey,
    Bin,
    BinCheck,
    EpochMetric,
    ModelVersion,
    Promotion,
    TrainingJob,
    utcnow,
)

PROBS = {"0": 0.01, "1": 0.04, "2": 0.8, "3": 0.1, "4": 0.03, "5": 0.01, "6+": 0.01}


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade_database(db_url)
    engine = make_engine(db_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def model_version(name: str = "resnet18-20261125-1712", **overrides: object) -> ModelVersion:
    fields: dict[str, object] = {
        "name": name,
        "artifact_key": f"models/{name}/model.pt",
        "sha256": "ab" * 32,
        "architecture": "resnet18",
        "classes": ["0", "1", "2", "3", "4", "5", "6+"],
        "preprocessing": {"image_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "metrics": {"accuracy": 0.55, "rmse": 1.2},
        "plots": {"confusion_matrix": f"models/{name}/confusion_matrix.png"},
        "source": "cli",
    }
    fields.update(overrides)
    return ModelVersion(**fields)


def training_job(**overrides: object) -> TrainingJob:
    fields: dict[str, object] = {
        "dataset": {"uri": "s3://aft-vbi-pds/", "split": "train"},
        "params": {"recipe": "smoke", "lr": 0.002},
        "promotion_policy": "if_better",
        "epochs": 2,
    }
    fields.update(overrides)
    return TrainingJob(**fields)


def epoch_metric(job_id: str, epoch: int) -> EpochMetric:
    return EpochMetric(
        job_id=job_id,
        epoch=epoch,
        train_loss=1.5 / (epoch + 1),
        val_loss=1.7 / (epoch + 1),
        val_accuracy=0.3 + 0.1 * epoch,
        val_rmse=1.4,
        metrics={"accuracy_0-5": 0.4},
        duration_s=12.5,
    )


def test_full_roundtrip(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        job = training_job(status="succeeded", epoch=2, host="gpu-1", celery_task_id="task-1")
        version = model_version(source="job", training_job=job, is_active=True, promoted_at=utcnow())
        # Each row points at the other; both go in one flush (post_update breaks the cycle).
        job.model_version = version
        job.epoch_metrics = [epoch_metric(job.id, 0), epoch_metric(job.id, 1)]
        version.promotions.append(Promotion(actor="job", reason="if_better: accuracy 0.55 > none"))
        padded = Bin(
            id="00121", expected_count=2, source="abid-metadata", items=[{"asin": "B00X", "quantity": 2}]
        )
        plain = Bin(id="121", expected_count=5, source="api")
        padded.checks.append(
            BinCheck(
                image_key="checks/00121/1.jpg",
                expected_count=2,
                predicted_count=2,
                predicted_label="2",
                probabilities=PROBS,
                probability_of_expected=0.8,
                verdict="match",
                thresholds={"match": 0.5, "mismatch": 0.1},
                model_version=version,
            )
        )
        session.add_all([job, version, padded, plain, ApiKey(name="ci", prefix="bw_abc", key_hash="f" * 64)])
        job_id = job.id

    with session_scope(factory) as session:
        job = session.get_one(TrainingJob, job_id)
        version = session.scalars(sa.select(ModelVersion)).one()
        assert len(job_id) == 32 and int(job_id, 16) >= 0
        assert job.model_version_id == version.id
        assert version.training_job_id == job_id
        assert version.training_job is job
        assert [m.epoch for m in job.epoch_metrics] == [0, 1]
        assert job.epoch_metrics[1].val_accuracy == pytest.approx(0.4)
        assert job.cancel_requested is False
        assert version.is_active is True
        assert version.classes[-1] == "6+"
        assert [p.actor for p in version.promotions] == ["job"]

        # String ids: "00121" and "121" are two bins.
        assert session.get_one(Bin, "00121").expected_count == 2
        assert session.get_one(Bin, "121").expected_count == 5
        padded = session.get_one(Bin, "00121")
        assert padded.items == [{"asin": "B00X", "quantity": 2}]
        assert session.get_one(Bin, "121").items is None
        (check,) = padded.checks
        assert check.probabilities == PROBS
        assert check.model_version_id == version.id

        key = session.scalars(sa.select(ApiKey)).one()
        assert key.scopes == [] and key.revoked_at is None

        # Timestamps come back aware and in UTC on both dialects.
        for stamp in (job.created_at, version.promoted_at, check.created_at, key.created_at):
            assert stamp is not None
            assert stamp.utcoffset() == timedelta(0)
            assert abs(utcnow() - stamp) < timedelta(minutes=5)


def test_aware_datetimes_are_stored_as_utc(factory: sessionmaker[Session]) -> None:
    berlin_noon = datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(factory) as session:
        session.add(Bin(id="b1", expected_count=1, source="api", last_checked_at=berlin_noon))
    with session_scope(factory) as session:
        stored = session.get_one(Bin, "b1").last_checked_at
        assert stored == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
        assert stored is not None and stored.tzinfo == UTC
        # Comparisons in SQL see the same instant, whatever offset the parameter has.
        found = session.scalars(sa.select(Bin.id).where(Bin.last_checked_at >= berlin_noon)).all()
        assert found == ["b1"]


def test_naive_datetimes_are_rejected(factory: sessionmaker[Session]) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        with session_scope(factory) as session:
            session.add(Bin(id="b1", expected_count=1, source="api", last_checked_at=datetime(2026, 1, 1)))


def test_an_epoch_is_recorded_once_per_job(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        job = training_job()
        session.add(job)
        session.flush()
        session.add(epoch_metric(job.id, 0))
        job_id = job.id

    with pytest.raises(sa.exc.IntegrityError):
        with session_scope(factory) as session:
            session.add(epoch_metric(job_id, 0))

    with session_scope(factory) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(EpochMetric)) == 1


def test_a_job_registers_at_most_one_model_version(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        job = training_job()
        session.add_all([job, model_version("first", source="job", training_job=job)])
        job_id = job.id

    with pytest.raises(sa.exc.IntegrityError):
        with session_scope(factory) as session:
            session.add(model_version("second", source="job", training_job_id=job_id))

    with session_scope(factory) as session:
        # Versions from the CLI have no job, and any number of them may exist.
        session.add_all([model_version("cli-a"), model_version("cli-b")])
    with session_scope(factory) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ModelVersion)) == 3


@pytest.mark.parametrize(
    "row",
    [
        lambda: Bin(id="b", expected_count=1, source="spreadsheet"),
        lambda: Bin(id="b", expected_count=-1, source="api"),
        lambda: Bin(id="b", expected_count=1, source="api", last_verdict="maybe"),
        lambda: training_job(status="paused"),
        lambda: training_job(promotion_policy="sometimes"),
        lambda: model_version(source="notebook"),
    ],
    ids=["bin-source", "negative-count", "verdict", "job-status", "promotion-policy", "model-source"],
)
def test_enumerated_columns_reject_unknown_values(factory: sessionmaker[Session], row: object) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        with session_scope(factory) as session:
            session.add(row())  # type: ignore[operator]


def test_foreign_keys_are_enforced(factory: sessionmaker[Session]) -> None:
    # On SQLite this only holds because make_engine turns enforcement on for every connection.
    with pytest.raises(sa.exc.IntegrityError):
        with session_scope(factory) as session:
            session.add(epoch_metric("no-such-job", 0))


def test_deleting_a_bin_deletes_its_checks_and_deleting_a_version_keeps_them(
    factory: sessionmaker[Session],
) -> None:
    with session_scope(factory) as session:
        version = model_version()
        job = training_job(model_version=version)
        for bin_id in ("keep", "drop"):
            bin_ = Bin(id=bin_id, expected_count=1, source="api")
            bin_.checks.append(
                BinCheck(
                    image_key=f"checks/{bin_id}.jpg",
                    expected_count=1,
                    predicted_count=3,
                    predicted_label="3",
                    probabilities=PROBS,
                    probability_of_expected=0.04,
                    verdict="mismatch",
                    thresholds={"match": 0.5, "mismatch": 0.1},
                    model_version=version,
                )
            )
            session.add(bin_)
        session.add(job)
        job_id = job.id

    with session_scope(factory) as session:
        session.delete(session.get_one(Bin, "drop"))
    with session_scope(factory) as session:
        session.delete(session.scalars(sa.select(ModelVersion)).one())

    with session_scope(factory) as session:
        (check,) = session.scalars(sa.select(BinCheck)).all()
        assert check.bin_id == "keep"
        assert check.model_version_id is None
        assert session.get_one(TrainingJob, job_id).model_version_id is None


def test_session_scope_rolls_back_on_error(factory: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with session_scope(factory) as session:
            session.add(Bin(id="b1", expected_count=1, source="api"))
            session.flush()
            raise RuntimeError("boom")

    with session_scope(factory) as session:
        assert session.get(Bin, "b1") is None


def test_updated_at_moves_on_update(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        session.add(Bin(id="b1", expected_count=1, source="api"))
    with session_scope(factory) as session:
        bin_ = session.get_one(Bin, "b1")
        created, first_update = bin_.created_at, bin_.updated_at
        bin_.expected_count = 2
    with session_scope(factory) as session:
        bin_ = session.get_one(Bin, "b1")
        assert bin_.created_at == created
        assert bin_.updated_at > first_update
