"""A training job's success: its one model version registered, the promotion policy applied, the job
finished (a tuning trial instead hands its result to its study: worker/trials.py).

``Registration`` is a part of ``worker.runner.JobRun`` (a mixin): it uses the run's session factory,
artifact store, work folder and ownership token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from model.checkpoint import CheckpointError, read_sidecar, sha256_file
from model.config import TrainConfig
from model.metrics import Evaluation
from model.training import TrainResult
from records import jobs, model_versions, registry
from records.artifacts import ArtifactStore
from records.orm import ModelVersion, TrainingJob
from settings import Settings
from worker.job_data import JobData
from worker.outcomes import LeaseLost, Outcome
from worker.promotion import Decision, decide

if TYPE_CHECKING:  # pragma: no cover
    from worker.trials import StudyTrial

log = logging.getLogger("worker.runner")


class Registration:
    job_id: str
    owner: str
    settings: Settings
    artifacts: ArtifactStore
    work_dir: Path
    trial: StudyTrial | None
    # Methods of JobRun, which this class is a part of (declared for the type checker only).
    session: Callable[[], Session]
    _delete_prefix: Callable[[str], None]

    def _evaluate_version(
        self, artifact_key: str, sha256: str, data: JobData, cfg: TrainConfig
    ) -> Evaluation:
        from model.evaluation import evaluate_checkpoint

        path = self.work_dir / "active" / "model.pt"
        self.artifacts.download(artifact_key, path)
        digest = sha256_file(path)
        if digest != sha256:
            raise CheckpointError(
                f"{artifact_key} has sha256 {digest[:12]}…, the registry says {sha256[:12]}…"
            )
        # workers=0: this process has initialised CUDA by now, and must not fork.
        return evaluate_checkpoint(
            path,
            data.source,
            data.val,
            device=self.settings.device,
            batch_size=cfg.batch_size,
            workers=0,
            progress=False,
        ).evaluation

    def _register(self, job: TrainingJob, data: JobData, result: TrainResult) -> ModelVersion:
        """The job's one model version: found if an earlier delivery registered it, else uploaded and added.

        Its own transaction, before the promotion: a crash between the two leaves a registered version
        and a running job, and the redelivered task (which resumes after the last epoch, so it only
        re-evaluates) finds the version by its unique training_job_id instead of adding a second one.
        """
        evaluation = result.evaluation
        meta = read_sidecar(result.best_path) or {}
        meta["metrics"] = model_versions.finite_json(
            {
                **evaluation.to_dict(),
                "temperature": result.temperature,
                "evaluated_on": data.split,
                "dataset": job.dataset.get("uri"),
                "train_bins": len(data.train),
                # How many of the bins are photos people reviewed (dataset.reviews), train and val.
                **({"reviewed_examples": data.reviewed} if data.reviewed else {}),
                "history": result.history,
                "resumed_after_epoch": result.resumed_from_epoch,
            }
        )
        name = str(job.params.get("model_name") or f"job-{self.job_id[:8]}")
        with self.session() as session:
            existing = registry.version_for_job(session, self.job_id)
            if existing is not None:
                return existing
            try:
                version, _created = model_versions.register_checkpoint(
                    session,
                    self.artifacts,
                    result.best_path,
                    meta,
                    name=name,
                    source="job",
                    training_job_id=self.job_id,
                    plots=result.plots,
                )
                session.commit()
            except IntegrityError:
                session.rollback()
                existing = registry.version_for_job(session, self.job_id)
                if existing is None:
                    raise
                return existing
            return version

    def _succeed(self, job: TrainingJob, cfg: TrainConfig, data: JobData, result: TrainResult) -> Outcome:
        if self.trial is not None:
            return self._trial_succeeded(result)
        version = self._register(job, data, result)
        for _attempt in range(3):
            with self.session() as session:
                active = registry.active_version(session)
                active_id = active.id if active else None
                active_ref = (active.artifact_key, active.sha256) if active else None
                session.commit()

            def evaluate_active(ref: tuple[str, str] | None = active_ref) -> Evaluation:
                assert ref is not None  # decide() only calls this when a version is active
                return self._evaluate_version(ref[0], ref[1], data, cfg)

            if active_id == version.id:  # an earlier delivery promoted it and died before finishing
                decision = Decision(True, job.promotion_decision or "promoted by an earlier attempt")
            else:
                decision = decide(
                    job.promotion_policy, result.evaluation, data.split, active_id, evaluate_active
                )
            with self.session() as session:
                registry.lock_promotions(session)
                now_active = registry.active_version(session)
                if (now_active.id if now_active else None) != active_id:
                    session.rollback()  # someone promoted meanwhile: decide again against the new one
                    continue
                mine = session.get(ModelVersion, version.id)
                assert mine is not None
                if decision.promote and not mine.is_active:
                    registry.promote(
                        session, mine, actor=f"training job {self.job_id}", reason=decision.reason
                    )
                ours = jobs.finish_job(
                    session,
                    self.job_id,
                    self.owner,
                    "succeeded",
                    promotion_decision=decision.reason,
                    model_version_id=version.id,
                    commit=False,
                )
                if not ours:
                    session.rollback()
                    raise LeaseLost(self.job_id)
                session.commit()
            log.info("job %s succeeded: model version %s; %s", self.job_id, version.id, decision.reason)
            self._delete_prefix(f"jobs/{self.job_id}/epochs/")
            return Outcome.SUCCEEDED
        raise RuntimeError("could not apply the promotion policy: the active version kept changing")

    def _trial_succeeded(self, result: TrainResult) -> Outcome:
        assert self.trial is not None
        value = self.trial.complete(result)
        note = (
            f"trial {self.trial.number}: {self.trial.objective.name} {value:.4f}; the tuning job registers "
            "its best trial"
        )
        with self.session() as session:
            if not jobs.finish_job(session, self.job_id, self.owner, "succeeded", promotion_decision=note):
                raise LeaseLost(self.job_id)
        log.info("job %s succeeded: %s", self.job_id, note)
        self._delete_prefix(f"jobs/{self.job_id}/epochs/")
        return Outcome.SUCCEEDED
