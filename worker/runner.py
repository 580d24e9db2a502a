"""Running one training job, so that it survives the faults a fleet of GPU hosts really has.

- Claim: the job gets one live owner (records/jobs.py claim_job). A redelivered message for a finished job
  does nothing; one for a job whose owner still sends heartbeats is handed back to the queue; one for a
  job whose workers died BINWATCH_JOB_MAX_ATTEMPTS times fails it instead of running it again.
- Resume on any host: the local work folder is rebuilt from the artifact store, from the checkpoint of the
  last epoch the database records as done, so a job killed on one host continues on another.
- Every epoch: checkpoint files to the artifact store first, *then* the epoch's metrics row and
  ``job.epoch`` in one transaction. The database row is the pointer to the newest complete checkpoint;
  an upload cut short by a crash is simply never pointed at.
- Cancel, time limit, worker shutdown and a lost ownership all stop the loop through ``should_stop``,
  polled every batch (the cancel flag is read from the database at most once per
  ``job_cancel_poll_seconds``), so they take effect within about a second of training.
- Success: the model, its metrics and plots go to the artifact store, then one transaction registers the
  version (unique per job), applies the promotion policy and marks the job succeeded.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from model.abid import DatasetError
from model.checkpoint import CheckpointError
from model.config import TrainConfig
from model.distributed import Group, is_group_lost
from model.training import TrainHooks, TrainingCancelled, TrainResult
from records import jobs
from records.artifacts import ArtifactStore, open_artifact_store
from records.db import make_engine, make_session_factory, session_scope
from records.job_spec import DatasetSpec
from records.orm import TrainingJob
from settings import Settings
from worker.epoch_store import EpochStorage
from worker.group_leader import GroupLeading
from worker.heartbeat import Heartbeat
from worker.job_data import JobData, load_job_data
from worker.outcomes import LeaseLost, Outcome, StopReason
from worker.registration import Registration
from worker.usage import UsageRecording

if TYPE_CHECKING:  # pragma: no cover
    from worker.trials import StudyTrial

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- process resources


@dataclass
class Resources:
    settings: Settings
    sessions: sessionmaker[Session]
    artifacts: ArtifactStore


_resources: dict[int, Resources] = {}
_resources_lock = threading.Lock()


def resources(settings: Settings | None = None) -> Resources:
    """This process's database engine and artifact store (per pid: prefork children build their own,
    since a connection pool inherited across fork would share sockets with the parent)."""
    pid = os.getpid()
    with _resources_lock:
        res = _resources.get(pid)
        if res is None:
            from settings import get_settings

            settings = settings or get_settings()
            engine = make_engine(settings.resolved_database_url)
            artifacts = open_artifact_store(
                settings.resolved_artifact_store, settings.s3_endpoint_url, settings.s3_region
            )
            res = Resources(settings, make_session_factory(engine), artifacts)
            _resources[pid] = res
        return res


def owner_token() -> str:
    """Who runs the job, for people ("host") and for the ownership checks (unique per task run: in a
    container the pid is the same after every restart)."""
    return f"{socket.gethostname()} pid {os.getpid()} run {uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------ the job run


class JobRun(EpochStorage, Registration, UsageRecording, GroupLeading):
    def __init__(
        self,
        job_id: str,
        res: Resources,
        shutdown_requested: Callable[[], bool] = lambda: False,
        owner: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.res = res
        self.settings = res.settings
        self.artifacts = res.artifacts
        self.shutdown_requested = shutdown_requested
        self.owner = owner or owner_token()
        self.stop_reason: StopReason | None = None
        self.start_epoch = 0
        self.best_epoch: int | None = None
        self.heartbeat: Heartbeat | None = None
        self.work_dir = self.settings.resolved_job_work_dir / job_id
        self._cancel_checked_at = -math.inf
        self._cancel = False
        self._deadline = math.inf
        self.soft_limit_s = self.settings.job_time_limit_seconds
        self._current_epoch = 0
        self.tuning_job_id: str | None = None
        self.trial: StudyTrial | None = None
        self.phases: dict[str, float] = {}
        self._lap_at = time.monotonic()
        self.processes = 1
        self.group: Group | None = None
        self.local_ranks: list[BaseProcess] = []

    def session(self) -> Session:
        return self.res.sessions()

    # -- the whole run
    def run(self) -> Outcome:
        outcome = self._run()
        if self.tuning_job_id is not None and outcome not in (Outcome.BUSY, Outcome.REQUEUE, Outcome.LOST):
            from worker import trials

            try:
                trials.after_trial(self.res, self.job_id)
            except Exception:  # noqa: BLE001 - the reaper continues a study nobody moved on (worker/reaper.py)
                log.exception("job %s: could not move its tuning job %s on", self.job_id, self.tuning_job_id)
        return outcome

    def _run(self) -> Outcome:
        with self.session() as session:
            claim = jobs.claim_job(
                session,
                self.job_id,
                self.owner,
                self.settings.job_stale_after_seconds,
                max_attempts=self.settings.job_max_attempts,
            )
        self.tuning_job_id = claim.job.tuning_job_id if claim.job is not None else None
        if claim.outcome == jobs.ClaimOutcome.BUSY:
            log.warning(
                "job %s is running on %s with a fresh heartbeat; this delivery goes back to the queue "
                "(Redis redelivers after BINWATCH_BROKER_VISIBILITY_TIMEOUT=%ss, which must exceed the "
                "longest job)",
                self.job_id,
                claim.job.host if claim.job else "?",
                self.settings.resolved_visibility_timeout,
            )
            return Outcome.BUSY
        if claim.outcome == jobs.ClaimOutcome.CANCELLED:
            log.info("job %s was cancelled before it ran", self.job_id)
            return Outcome.CANCELLED
        if claim.outcome == jobs.ClaimOutcome.GAVE_UP:
            # Not run: the message is acknowledged, so this job cannot take down yet another worker.
            log.error("job %s failed: %s", self.job_id, claim.job.error if claim.job else "out of attempts")
            return Outcome.FAILED
        if claim.outcome != jobs.ClaimOutcome.CLAIMED:
            log.info("job %s: nothing to do (%s)", self.job_id, claim.outcome)
            return Outcome.SKIPPED
        job = claim.job
        assert job is not None
        log.info("job %s claimed by %s (resuming after epoch %d)", self.job_id, self.owner, job.epoch)
        self.heartbeat = Heartbeat(
            self.res.sessions, self.job_id, self.owner, self.settings.job_heartbeat_seconds
        )
        self.heartbeat.start()
        outcome = Outcome.FAILED
        try:
            outcome = self._run_claimed(job)
            return outcome
        finally:
            self.heartbeat.stop()
            if outcome != Outcome.LOST:
                self._record_usage(outcome)

    def _run_claimed(self, job: TrainingJob) -> Outcome:
        self._lap_at = time.monotonic()
        self.soft_limit_s = int(job.params.get("time_limit_seconds") or self.settings.job_time_limit_seconds)
        self._deadline = time.monotonic() + self.soft_limit_s
        try:
            spec = DatasetSpec.model_validate(job.dataset)
            config = job.params["config"]
            if job.tuning_job_id is not None:
                from worker import trials

                self.trial, config = trials.begin(self.res, job)
            device = self.settings.device
            if job.nodes * job.procs_per_node > 1:
                from worker.groups import rank_device

                device = rank_device(self.settings, 0)  # DDP needs rank 0's own GPU by index
            cfg = TrainConfig.model_validate({**config, "device": device})
            if multiprocessing.current_process().daemon and cfg.num_workers:
                # Celery's prefork children are daemonic, and daemonic processes cannot start the
                # DataLoader's worker processes. Load in-process instead (slower; the solo pool has no
                # such limit, which is one reason it is the recommended pool).
                log.warning("job %s: prefork pool, so images are loaded without DataLoader workers", job.id)
                cfg = cfg.model_copy(update={"num_workers": 0})
            data = load_job_data(spec, self.settings)
            self._check_not_stopped_before_training()
            self.start_epoch = self._restore_checkpoints(job)
            self._lap("load")
            self.processes = job.procs_per_node
            result = self._train(job, cfg, data)
            self._lap("train")
            outcome = self._succeed(job, cfg, data, result)
            self._lap("finish")
            return outcome
        except TrainingCancelled as exc:
            return self._stopped(str(exc))
        except LeaseLost:
            log.warning("job %s was taken over by another worker; this run stops here", self.job_id)
            return Outcome.LOST
        except Exception as exc:  # noqa: BLE001 - every failure ends up on the job, readable
            from celery.exceptions import SoftTimeLimitExceeded

            if isinstance(exc, SoftTimeLimitExceeded):
                self.stop_reason = StopReason.TIME_LIMIT
                return self._stopped("stopped by Celery's soft time limit")
            if self.trial is not None and type(exc).__name__ == "TrialPruned":
                return self._pruned(str(exc))
            if job.nodes * job.procs_per_node > 1 and is_group_lost(exc):
                return self._group_lost(exc)
            message = self._describe(exc)
            log.error("job %s failed: %s", self.job_id, message, exc_info=not isinstance(exc, DatasetError))
            with self.session() as session:
                jobs.finish_job(session, self.job_id, self.owner, "failed", error=message)
            return Outcome.FAILED
        finally:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    @staticmethod
    def _describe(exc: BaseException) -> str:
        if isinstance(exc, DatasetError):
            return f"dataset: {exc}"
        if isinstance(exc, CheckpointError):
            return f"checkpoint: {exc}"
        if isinstance(exc, ValueError):
            return str(exc)  # the ML core's ValueErrors are written for users ("no training images left…")
        return f"{type(exc).__name__}: {exc}"

    # -- stopping
    def should_stop(self) -> bool:
        if self.heartbeat is not None and self.heartbeat.lost.is_set():
            self.stop_reason = StopReason.LEASE_LOST
            return True
        if self.shutdown_requested():
            self.stop_reason = StopReason.SHUTDOWN
            return True
        now = time.monotonic()
        if now > self._deadline:
            self.stop_reason = StopReason.TIME_LIMIT
            return True
        if now - self._cancel_checked_at >= self.settings.job_cancel_poll_seconds:
            self._cancel_checked_at = now
            try:
                with self.session() as session:
                    self._cancel = jobs.cancel_requested(session, self.job_id)
            except Exception:  # noqa: BLE001 - keep training through a database blip; poll again later
                log.warning("could not read the cancel flag of job %s", self.job_id, exc_info=True)
        if self._cancel:
            self.stop_reason = StopReason.CANCEL
            return True
        return False

    def _check_not_stopped_before_training(self) -> None:
        self._cancel_checked_at = -math.inf  # read the flag now, whatever the cache says
        if self.should_stop():
            raise TrainingCancelled("stopped before training started")

    def _stopped(self, detail: str) -> Outcome:
        reason = self.stop_reason
        if reason is None and self.group is not None:
            # Not this process's own decision: another node of the group is shutting down (model/training.py
            # stops the whole group when any process asks), so the job goes back to the queue.
            reason = StopReason.SHUTDOWN
            detail = f"another node of its group is shutting down ({detail})"
        if reason == StopReason.LEASE_LOST:
            log.warning("job %s was taken over by another worker; this run stops here", self.job_id)
            return Outcome.LOST
        with self.session() as session:
            if reason == StopReason.SHUTDOWN:
                # Back to the queue; whoever takes it resumes from the last stored epoch.
                jobs.release_job(session, self.job_id, self.owner)
                log.warning("worker shutting down: job %s goes back to the queue (%s)", self.job_id, detail)
                return Outcome.REQUEUE
            if reason == StopReason.TIME_LIMIT:
                jobs.finish_job(
                    session,
                    self.job_id,
                    self.owner,
                    "failed",
                    error=f"time limit of {self.soft_limit_s} s exceeded ({detail}; {self._current_epoch} "
                    f"epochs were finished)",
                )
                return Outcome.FAILED
            jobs.finish_job(session, self.job_id, self.owner, "cancelled")
        log.info("job %s cancelled (%s)", self.job_id, detail)
        self._delete_prefix(f"jobs/{self.job_id}/epochs/")
        return Outcome.CANCELLED

    def _group_lost(self, exc: BaseException) -> Outcome:
        """A process of the job's group died: back to the queue, the attempt counted (a host was lost)."""
        with self.session() as session:
            if not jobs.release_job(session, self.job_id, self.owner, give_back_attempt=False):
                return Outcome.LOST
        log.warning(
            "job %s: its group lost a process (%s); back to the queue, to resume after epoch %d once enough "
            "workers are up",
            self.job_id,
            str(exc).splitlines()[0][:300],
            self._current_epoch,
        )
        return Outcome.REQUEUE

    def _pruned(self, detail: str) -> Outcome:
        with self.session() as session:
            if not jobs.finish_job(session, self.job_id, self.owner, "pruned", promotion_decision=detail):
                return Outcome.LOST
        log.info("job %s: %s", self.job_id, detail)
        self._delete_prefix(f"jobs/{self.job_id}/epochs/")
        return Outcome.PRUNED

    def _train(self, job: TrainingJob, cfg: TrainConfig, data: JobData) -> TrainResult:
        from model.training import train

        hooks = TrainHooks(on_epoch_end=self._on_epoch_end, should_stop=self.should_stop, stop_check_every=1)
        self._current_epoch = self.start_epoch
        try:
            self.group = self._lead_group(job, cfg)  # None for a one-process job (worker/group_leader.py)
            return train(
                cfg,
                data.source,
                data.train,
                data.val,
                self.work_dir,
                hooks,
                resume=True,
                progress=False,
                group=self.group,
            )
        finally:
            self._leave_group()


def fail_abandoned(sessions: sessionmaker[Session], job_id: str, error: str) -> bool:
    """Fail a running job whose task was killed by Celery's hard time limit (called from the parent)."""
    with session_scope(sessions) as session:
        return jobs.fail_running(session, job_id, error)


def run_job(
    job_id: str, res: Resources | None = None, shutdown_requested: Callable[[], bool] = lambda: False
) -> Outcome:
    return JobRun(job_id, res or resources(), shutdown_requested).run()
