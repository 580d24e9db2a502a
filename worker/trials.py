"""Tuning jobs on the workers: each trial is an ordinary training job that also talks to the study.

How a trial job differs from other training jobs (worker/runner.py calls the hooks here):

- **Start** (``begin``): the first worker to run it asks the study (Optuna's RDB storage, records/
  tuning_storage.py) for a trial, stores the trial number and the sampled parameters on the job row, and
  trains the base configuration with those parameters on top. A redelivered message (its worker died)
  finds the number on the row and continues the *same* Optuna trial from the last stored epoch: a killed
  trial is retried, not failed, because its finished epochs are stored like any job's and the study would
  otherwise pay for them twice; a trial whose workers keep dying fails after BINWATCH_JOB_MAX_ATTEMPTS.
- **Every epoch** (``report``): the objective's value goes to Optuna, and the pruner may stop the trial
  (the job ends ``pruned``); a loss that is no longer finite prunes it at once (model/tuning/study.py).
- **Success** (``complete``): the trial's best checkpoint goes to the artifact store under the study's
  prefix and the value to Optuna (told first, then the job finished: a crash in between is redelivered,
  re-evaluated, and finds the trial already told). No model version: only the study registers one.
- **After every trial job ends** (``after_trial``, also on a redelivered message for an ended trial): the
  study adds trial jobs up to its parallelism (records/tuning_jobs.py plan_trials); when none are left
  to add or running, ``finish_study`` (worker/study_end.py) registers the best trial's checkpoint as the
  study's one model version and applies the promotion policy, in the transaction that marks the study
  succeeded, so a cancelled study never registers one and two finishers cannot register two.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from model.checkpoint import sidecar_path
from model.config import TrainConfig
from model.training import EpochResult, TrainResult
from model.tuning.objective import Objective
from model.tuning.objective import objective as objective_named
from model.tuning.space import SearchSpace
from model.tuning.study import trial_config
from records import jobs, model_versions, tuning_jobs
from records.job_queue import QueueUnavailable, enqueue_training
from records.orm import TrainingJob, TuningJob
from records.tuning_storage import load_study
from worker.producer import producer

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from worker.runner import Resources

log = logging.getLogger(__name__)


def trial_prefix(tuning_id: str, number: int) -> str:
    return f"tuning/{tuning_id}/trials/{number:04d}"


def pictures_prefix(tuning_id: str) -> str:
    return f"tuning/{tuning_id}/pictures"


@dataclass
class StudyTrial:
    """One trial job's handle on its Optuna trial."""

    res: Resources
    tuning_id: str
    job_id: str
    study: optuna.Study
    trial: optuna.Trial
    objective: Objective
    started: float

    @property
    def number(self) -> int:
        return self.trial.number

    def report(self, ep: EpochResult) -> None:
        """After an epoch was stored: tell Optuna; raise optuna.TrialPruned when the trial should stop."""
        import optuna

        if not (math.isfinite(ep.train_loss) and math.isfinite(ep.val_loss)):
            self._saving(ep)
            raise optuna.TrialPruned(f"diverged in epoch {ep.epoch}: the loss is not finite")
        value = self.objective.value(ep.summary())
        self.trial.report(value, ep.epoch)
        if ep.epoch < ep.epochs and self.trial.should_prune():
            self._saving(ep)
            raise optuna.TrialPruned(f"pruned after epoch {ep.epoch}: {self.objective.name} {value:.4f}")

    def _saving(self, ep: EpochResult) -> None:
        left = ep.epochs - ep.epoch
        self.trial.set_user_attr("epochs_saved", left)
        self.trial.set_user_attr("seconds_saved", round(left * float(ep.duration_s), 1))

    def complete(self, result: TrainResult) -> float:
        """Store the trial's best checkpoint and tell Optuna its value; returns the value."""
        value = self.objective.value(result.evaluation.headline())
        if not math.isfinite(value):
            raise ValueError(f"trial {self.number} gave a non-finite {self.objective.name}: {value}")
        prefix = trial_prefix(self.tuning_id, self.number)
        self.res.artifacts.put_file(f"{prefix}/best.pt", result.best_path)
        self.res.artifacts.put_file(f"{prefix}/best.json", sidecar_path(result.best_path))
        attrs = {
            "checkpoint": f"{prefix}/best.pt",
            "job": self.job_id,
            "duration_s": round(time.monotonic() - self.started, 1),
            "figures": model_versions.finite_json(
                {k: float(v) for k, v in result.evaluation.headline().items()}
            ),
            "temperature": result.temperature,
        }
        for key, val in attrs.items():
            self.trial.set_user_attr(key, val)
        tell(self.study, self.number, value=value)
        return value


def tell(study: optuna.Study, number: int, *, value: float | None = None, state: str | None = None) -> bool:
    """Finish trial ``number`` unless it already is (a redelivered task); True if this call finished it."""
    import optuna

    trial = study.get_trials(deepcopy=False)[number]
    if trial.state.is_finished():
        return False
    if value is not None:
        study.tell(number, value)
    else:
        study.tell(number, state=optuna.trial.TrialState[state or "FAIL"])
    return True


def _study_of(res: Resources, tuning: TuningJob) -> optuna.Study:
    return load_study(res.settings.resolved_tuning_storage_url, tuning.study_name)


def begin(res: Resources, job: TrainingJob) -> tuple[StudyTrial, dict[str, Any]]:
    """The trial this job runs (asked now on its first run) and its full training configuration."""

    assert job.tuning_job_id is not None
    with res.sessions() as session:
        tuning = tuning_jobs.lock(session, job.tuning_job_id)
        if tuning is None:
            raise ValueError(f"tuning job {job.tuning_job_id} of this trial no longer exists")
        params = dict(tuning.params)
        study = _study_of(res, tuning)
        row = session.get(TrainingJob, job.id, populate_existing=True)
        assert row is not None
        space = SearchSpace.from_dict(params["space"])
        if row.trial_number is None:
            trial = study.ask()
            trial_params = space.suggest(trial)
            trial.set_user_attr("job", job.id)
        else:
            trial = _trial(study, row.trial_number)
            trial_params = dict(study.get_trials(deepcopy=False)[row.trial_number].params)
        trial.set_user_attr("host", job.host or "")
        try:
            cfg = trial_config(TrainConfig.model_validate(params["config"]), trial_params)
        except ValueError as exc:
            tuning_jobs.set_trial(session, job.id, trial.number, trial_params, dict(params["config"]))
            session.commit()
            trial.set_user_attr("error", f"settings refused: {exc}")
            raise ValueError(f"trial {trial.number}: the settings refused {trial_params}: {exc}") from exc
        config = cfg.model_dump(mode="json") | {"device": "auto"}
        tuning_jobs.set_trial(session, job.id, trial.number, trial_params, config)
        trial.set_user_attr("epochs_planned", cfg.epochs)
        session.commit()
    log.info(
        "job %s runs trial %d of tuning job %s: %s", job.id, trial.number, job.tuning_job_id, trial_params
    )
    objective = objective_named(params["objective"])
    return StudyTrial(res, job.tuning_job_id, job.id, study, trial, objective, time.monotonic()), config


# ------------------------------------------------------------------------------------ after a trial ends


def after_trial(res: Resources, job_id: str) -> None:
    """Bring the study up to date after trial job ``job_id`` ended: Optuna told, trials added, or finished.

    Safe to call any number of times (a redelivered message calls it again).
    """
    with res.sessions() as session:
        job = session.get(TrainingJob, job_id)
        if job is None or job.tuning_job_id is None:
            return
        tuning_id, number, status, error = job.tuning_job_id, job.trial_number, job.status, job.error
        tuning = tuning_jobs.get_tuning_job(session, tuning_id)
        if tuning is None:
            return
        study_name = tuning.study_name
    if number is not None and status in ("failed", "cancelled", "pruned"):
        study = load_study(res.settings.resolved_tuning_storage_url, study_name)
        if status != "pruned" and error and not _finished(study, number):
            _trial(study, number).set_user_attr("error", error[:500])
        tell(study, number, state="PRUNED" if status == "pruned" else "FAIL")
    continue_study(res, tuning_id)


def _trial(study: optuna.Study, number: int) -> optuna.Trial:
    """A handle on trial ``number`` (asked by another process) to report to and annotate."""
    import optuna

    storage = study._storage  # noqa: SLF001 - Optuna has no public lookup by trial number
    return optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study._study_id, number))  # noqa: SLF001


def _finished(study: optuna.Study, number: int) -> bool:
    return study.get_trials(deepcopy=False)[number].state.is_finished()


def continue_study(res: Resources, tuning_id: str) -> None:
    """Add trial jobs up to the study's parallelism, or finish it when nothing is left to run."""
    with res.sessions() as session:
        tuning = tuning_jobs.lock(session, tuning_id)
        if tuning is None or tuning.status not in tuning_jobs.ACTIVE_STATUSES:
            return
        plan = tuning_jobs.plan_trials(session, tuning)
        added = [tuning_jobs.add_trial_job(session, tuning) for _ in range(plan.add)]
        queued = [(t.id, t.celery_task_id, (t.params or {}).get("time_limit_seconds")) for t in added]
        session.commit()
    for trial_job_id, task_id, soft in queued:
        try:
            enqueue_training(producer(res.settings), res.settings, trial_job_id, str(task_id), soft)
        except QueueUnavailable as exc:
            # Counted as a failed trial; the next trial to end adds another while budget is left.
            with res.sessions() as session:
                jobs.mark_not_queued(session, trial_job_id, f"not queued: {exc}")
                session.commit()
            log.error("tuning job %s: trial job %s could not be queued: %s", tuning_id, trial_job_id, exc)
    if plan.add:
        log.info(
            "tuning job %s: %d trial job(s) added (%d of %d)",
            tuning_id,
            plan.add,
            plan.created + plan.add,
            tuning.trials,
        )
        return
    if plan.active == 0 and plan.closed is not None:
        from worker.study_end import finish_study

        finish_study(res, tuning_id)
