"""worker/registration.py ``_succeed`` when someone promotes another version while the job is deciding, and
when a redelivery finds the version an earlier, crashed delivery registered.

The decision (if_better evaluates the active model on the job's own split, which takes a while) is taken
outside the promotion lock; under the lock the job checks that the version it compared against is still
the active one. If not, it decides again against the new one; after three such changes it gives up and
fails with a message, rather than promote on a stale comparison. Real Postgres, real checkpoints; the rival
promotion is made from another session at the one moment that matters: while the job evaluates.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from model.config import TrainConfig
from model.metrics import Evaluation
from model.training import TrainResult
from records import model_versions, registry
from records.artifacts import open_artifact_store
from records.migrate import upgrade_database
from records.orm import ModelVersion, Promotion, TrainingJob
from settings import Settings
from tests.api.support import tiny_checkpoint
from tests.worker.support import Jobs
from tests.worker.test_runner import make_settings
from worker.job_data import JobData
from worker.outcomes import LeaseLost
from worker.runner import JobRun, Outcome, Resources, run_job

pytestmark = pytest.mark.slow


class RacingRun(JobRun):
    """A job run during whose every evaluation of the active model another version gets promoted."""

    def __init__(self, job_id: str, res: Resources, rivals: list[int]) -> None:
        super().__init__(job_id, res)
        self.rivals = rivals
        self.evaluated: list[str] = []

    def _evaluate_version(
        self, artifact_key: str, sha256: str, data: JobData, cfg: TrainConfig
    ) -> Evaluation:
        self.evaluated.append(artifact_key)
        evaluation = super()._evaluate_version(artifact_key, sha256, data, cfg)
        if self.rivals:
            with self.session() as session:
                rival = session.get(ModelVersion, self.rivals.pop(0))
                assert rival is not None
                registry.promote(session, rival, actor="rival", reason="promoted during the job's decision")
                session.commit()
        return evaluation


@pytest.fixture
def env(
    pg_url: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Jobs, Resources, list[int]]]:
    upgrade_database(pg_url)
    settings: Settings = make_settings(pg_url, tmp_path)
    helper = Jobs(settings)
    res = Resources(settings, helper.sessions, open_artifact_store(settings.resolved_artifact_store))
    ids = []
    with helper.sessions() as session:
        for seed in (21, 22, 23):
            ckpt = tiny_checkpoint(tmp_path_factory.getbasetemp() / "checkpoints", seed)
            version, _ = model_versions.register_checkpoint(
                session, res.artifacts, ckpt, model_versions.read_checkpoint_metadata(ckpt), name=f"v{seed}"
            )
            session.flush()
            ids.append(version.id)
        registry.promote(session, session.get(ModelVersion, ids[0]), actor="test", reason="baseline")  # type: ignore[arg-type]
        session.commit()
    yield helper, res, ids
    helper.close()


def test_a_promotion_during_the_decision_makes_the_job_decide_again_against_the_new_model(
    env: tuple[Jobs, Resources, list[int]],
) -> None:
    helper, res, (first, second, _third) = env
    job_id = helper.submit(policy="if_better", enqueue=False, epochs=1)
    run = RacingRun(job_id, res, rivals=[second])
    assert run.run() == Outcome.SUCCEEDED
    job = helper.get(job_id)
    with helper.sessions() as s:
        keys = {
            row.id: row.artifact_key
            for row in s.execute(sa.select(ModelVersion.id, ModelVersion.artifact_key))
        }
        active = registry.active_version(s)
        rival_promotions = s.scalars(sa.select(Promotion).where(Promotion.actor == "rival")).all()
    # Evaluated against the first active model, then (after the rival's promotion) against the second.
    assert run.evaluated == [keys[first], keys[second]]
    assert f"active version {second}" in (job.promotion_decision or ""), job.promotion_decision
    assert len(rival_promotions) == 1
    promoted = (job.promotion_decision or "").startswith("policy 'if_better': promoted")
    assert (active is not None and active.id == job.model_version_id) is promoted


def test_a_job_whose_comparison_keeps_going_stale_gives_up_without_promoting(
    env: tuple[Jobs, Resources, list[int]],
) -> None:
    helper, res, (first, second, third) = env
    job_id = helper.submit(policy="if_better", enqueue=False, epochs=1)
    run = RacingRun(job_id, res, rivals=[second, third, second])
    assert run.run() == Outcome.FAILED
    job = helper.get(job_id)
    assert job.status == "failed"
    assert "could not apply the promotion policy: the active version kept changing" in (job.error or "")
    assert len(run.evaluated) == 3
    with helper.sessions() as s:
        active = registry.active_version(s)
        mine = s.scalar(sa.select(ModelVersion).where(ModelVersion.training_job_id == job_id))
    # The rivals' last promotion stands; the job's version is registered (its model is kept) but not active.
    assert active is not None and active.id == second
    assert mine is not None and not mine.is_active


class DiesAfterRegistering(JobRun):
    """A run whose process dies right after its version is registered, before the promotion and the job's
    end are written (LeaseLost makes the run stop without touching the job, as a dead process would)."""

    def _register(self, job: TrainingJob, data: JobData, result: TrainResult) -> ModelVersion:
        version = super()._register(job, data, result)
        raise LeaseLost(f"died after registering version {version.id}")


def test_the_redelivery_after_a_crash_finds_the_registered_version_and_adds_none(
    env: tuple[Jobs, Resources, list[int]],
) -> None:
    helper, res, (first, _second, _third) = env
    job_id = helper.submit(policy="always", enqueue=False, epochs=1)
    assert DiesAfterRegistering(job_id, res).run() == Outcome.LOST
    [registered] = versions_of(helper, job_id)
    job = helper.get(job_id)
    assert job.status == "running" and job.model_version_id is None and not registered.is_active
    with helper.sessions() as s:  # its worker is gone: the heartbeat goes stale
        s.execute(sa.update(TrainingJob).values(heartbeat_at=sa.func.now() - sa.text("interval '1 hour'")))
        s.commit()

    assert run_job(job_id, res) == Outcome.SUCCEEDED  # the redelivered message
    job = helper.get(job_id)
    [version] = versions_of(helper, job_id)
    assert version.id == registered.id and version.is_active and job.model_version_id == version.id
    assert job.attempts == 2 and [e.epoch for e in helper.epochs(job_id)] == [1]  # epoch 1 not trained again
    assert (
        job.promotion_decision == f"policy 'always': promoted without comparison, replacing version {first}"
    )


def versions_of(helper: Jobs, job_id: str) -> list[ModelVersion]:
    with helper.sessions() as s:
        return list(s.scalars(sa.select(ModelVersion).where(ModelVersion.training_job_id == job_id)))
