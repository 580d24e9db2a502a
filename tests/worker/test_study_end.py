"""worker/study_end.py on real Postgres and Optuna storage: how the finisher ends trials Optuna still shows as
running.

A pruned trial job is marked in the database before its worker tells Optuna, so another worker's finisher can
run in that gap (a clean-clone CI run showed it: two diverging trials pruned in the same second). Such a trial
was pruned, not failed; only a trial whose job never got that far is a failure.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from model.tuning.objective import objective
from model.tuning.study import open_study
from records import tuning_jobs
from records.artifacts import open_artifact_store
from records.migrate import upgrade_database
from records.tuning_storage import open_storage
from settings import Settings
from tests.worker.support import Jobs
from worker.runner import Resources
from worker.study_end import finish_study


def test_a_trial_whose_job_was_pruned_ends_pruned_and_one_never_reported_ends_failed(
    pg_url: str, tmp_path: Path
) -> None:
    upgrade_database(pg_url)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=pg_url,
        artifact_store=str(tmp_path / "artifacts"),
        home=tmp_path / "home",
        broker_url="redis://127.0.0.1:1/0",  # never contacted: nothing is queued once the budget is spent
    )
    helper = Jobs(settings)
    try:
        res = Resources(settings, helper.sessions, open_artifact_store(settings.resolved_artifact_store))
        with helper.sessions() as session:
            tuning = tuning_jobs.create_tuning_job(
                session,
                dataset={"uri": "/data"},
                params={"config": {"epochs": 2}, "objective": "accuracy", "space": {}},
                trials=2,
                parallelism=2,
                timeout_s=None,
                promotion_policy="never",
            )
            storage = open_storage(settings.resolved_tuning_storage_url)
            study = open_study(storage, tuning.study_name, objective("accuracy"))
            rows = [tuning_jobs.add_trial_job(session, tuning) for _ in range(2)]
            for row in rows:
                trial = study.ask()
                tuning_jobs.set_trial(session, row.id, trial.number, {}, {"epochs": 2})
            rows[0].status = "pruned"  # its worker has not told Optuna yet
            rows[1].status = "failed"  # its worker died before it could report
            tuning_id = tuning.id
            session.commit()

        finish_study(res, tuning_id)

        states = [t.state for t in study.get_trials(deepcopy=False)]
        assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL]
        with helper.sessions() as session:
            done = tuning_jobs.get_tuning_job(session, tuning_id)
            assert done is not None and done.status == "failed"
            assert done.error == "no trial completed (1 fail, 1 pruned)"
    finally:
        helper.close()
