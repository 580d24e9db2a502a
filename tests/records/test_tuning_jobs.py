"""records/tuning_jobs.py and the study storage, on both dialects: the trial budget, parallelism, the time
limit, cancel, stalled studies, and Optuna's tables kept apart from binwatch's."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from records import tuning_jobs
from records.db import make_engine
from records.migrate import upgrade_database
from records.orm import TrainingJob, TuningJob, utcnow
from records.tuning_storage import open_storage
from settings import Settings

CONFIG = {"epochs": 2, "lr": 0.002, "image_size": 64}


def new_study(session, trials: int = 5, parallelism: int = 2, timeout_s: int | None = None) -> TuningJob:  # type: ignore[no-untyped-def]
    job = tuning_jobs.create_tuning_job(
        session,
        dataset={"uri": "/data"},
        params={"config": CONFIG, "objective": "accuracy", "space": {}},
        trials=trials,
        parallelism=parallelism,
        timeout_s=timeout_s,
        promotion_policy="never",
    )
    session.commit()
    return job


def finish_trials(session, job: TuningJob, status: str, n: int) -> None:  # type: ignore[no-untyped-def]
    rows = [r for r in tuning_jobs.trial_jobs(session, job.id) if r.status == "queued"][:n]
    for r in rows:
        r.status = status
    session.commit()


def test_trials_are_added_up_to_the_parallelism_and_never_past_the_budget(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        job = new_study(session, trials=5, parallelism=2)
        for expected_add, finished in ((2, 0), (0, 0), (1, 1), (2, 2), (0, 0)):
            finish_trials(session, job, "succeeded", finished)
            tuning_jobs.lock(session, job.id)
            plan = tuning_jobs.plan_trials(session, job)
            assert plan.add == expected_add, plan
            for _ in range(plan.add):
                tuning_jobs.add_trial_job(session, job)
            session.commit()
        rows = tuning_jobs.trial_jobs(session, job.id)
        assert len(rows) == 5
        finish_trials(session, job, "pruned", 2)
        plan = tuning_jobs.plan_trials(session, job)
        # Pruned and failed trials count against the budget like complete ones.
        assert plan == tuning_jobs.Plan(0, 0, 5, "all 5 trials were started")
        # A trial job carries the base configuration and the study's id; it never promotes on its own.
        assert rows[0].params["tuning"] == {"job": job.id} and rows[0].promotion_policy == "never"
        assert rows[0].epochs == 2 and rows[0].trial_number is None


def test_no_trial_starts_after_the_time_limit_or_a_cancel(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        job = new_study(session, trials=10, parallelism=3, timeout_s=60)
        assert tuning_jobs.plan_trials(session, job).add == 3
        later = utcnow() + timedelta(seconds=61)
        assert tuning_jobs.plan_trials(session, job, now=later).closed == "its time limit of 60 s has passed"
        tuning_jobs.add_trial_job(session, job)
        running = tuning_jobs.add_trial_job(session, job)
        running.status = "running"
        session.commit()
        outcome, cancelled = tuning_jobs.request_cancel(session, job.id)
        session.commit()
        assert outcome == tuning_jobs.CancelOutcome.CANCELLED and cancelled is not None
        statuses = {(r.status, r.cancel_requested) for r in tuning_jobs.trial_jobs(session, job.id)}
        # The queued trial is cancelled at once; the running one is flagged for its worker.
        assert statuses == {("cancelled", True), ("running", True)}
        assert tuning_jobs.plan_trials(session, cancelled).add == 0
        assert tuning_jobs.request_cancel(session, job.id)[0] == tuning_jobs.CancelOutcome.FINISHED
        assert not tuning_jobs.finish(session, job.id, "succeeded")  # a cancelled study stays cancelled
        assert tuning_jobs.request_cancel(session, "0" * 32)[0] == tuning_jobs.CancelOutcome.NOT_FOUND


def test_a_running_study_with_no_trial_left_running_is_stalled(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        job = new_study(session, trials=2, parallelism=1)
        trial = tuning_jobs.add_trial_job(session, job)
        session.commit()
        assert tuning_jobs.stalled(session) == []
        trial.status = "pruned"  # the trial-job status issue 12 added
        session.commit()
        assert tuning_jobs.stalled(session) == [job.id]
        with pytest.raises(sa.exc.IntegrityError):
            trial.status = "exploded"
            session.commit()


def test_optuna_keeps_its_tables_apart_from_binwatchs(db_url: str) -> None:
    upgrade_database(db_url)
    settings = Settings(_env_file=None, database_url=db_url)  # type: ignore[call-arg]
    url = settings.resolved_tuning_storage_url
    import optuna

    optuna.create_study(storage=open_storage(url), study_name="apart")
    engine = make_engine(db_url)
    try:
        inspector = sa.inspect(engine)
        ours = set(inspector.get_table_names())
        assert "studies" not in ours and {"tuning_jobs", "alembic_version"} <= ours
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0007"
        if engine.dialect.name == "postgresql":
            assert "studies" in set(inspector.get_table_names(schema="optuna"))
        else:
            assert url.endswith("binwatch-optuna.db")
    finally:
        engine.dispose()


def test_a_database_that_cannot_hold_studies_is_refused_with_what_to_set() -> None:
    settings = Settings(_env_file=None, database_url="sqlite://")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="BINWATCH_TUNING_STORAGE_URL"):
        _ = settings.resolved_tuning_storage_url
    given = Settings(_env_file=None, tuning_storage_url="sqlite:////tmp/x.db")  # type: ignore[call-arg]
    assert given.resolved_tuning_storage_url == "sqlite:////tmp/x.db"


def test_trial_rows_are_deleted_with_their_study(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        job = new_study(session)
        tuning_jobs.add_trial_job(session, job)
        session.commit()
        session.delete(session.get(TuningJob, job.id))
        session.commit()
        assert session.scalar(sa.select(sa.func.count()).select_from(TrainingJob)) == 0
