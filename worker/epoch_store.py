"""A running job's epochs in the artifact store and the database: stored, pointed at, pruned, restored.

``EpochStorage`` is a part of ``worker.runner.JobRun`` (a mixin). The rules (worker/runner.py's docstring):
every epoch's checkpoint files go to the artifact store first, *then* its metrics row and ``job.epoch`` in
one transaction, so the database always points at a complete checkpoint; a resume on any host rebuilds
the work folder from what the database points at.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from model.checkpoint import sidecar_path
from model.training import EpochResult
from records import jobs, model_versions
from records.artifacts import ArtifactNotFound, ArtifactStore
from records.orm import TrainingJob
from worker.outcomes import LeaseLost

if TYPE_CHECKING:  # pragma: no cover
    from worker.trials import StudyTrial

log = logging.getLogger("worker.runner")


def _num(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class EpochStorage:
    job_id: str
    owner: str
    artifacts: ArtifactStore
    work_dir: Path
    start_epoch: int
    best_epoch: int | None
    _current_epoch: int
    trial: StudyTrial | None
    # A method of JobRun, which this class is a part of (declared for the type checker only).
    session: Callable[[], Session]

    # -- keys in the artifact store
    def epoch_prefix(self, epoch: int) -> str:
        return f"jobs/{self.job_id}/epochs/{epoch:04d}"

    def _restore_checkpoints(self, job: TrainingJob) -> int:
        """Rebuild the work folder from the artifact store; returns the epoch training resumes after."""
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        done = job.epoch
        if done <= 0:
            return 0
        with self.session() as session:
            rows = jobs.epoch_metrics(session, self.job_id)
        best = [r.epoch for r in rows if r.epoch <= done and (r.metrics or {}).get("is_best")]
        self.best_epoch = max(best) if best else None
        try:
            for name in ("last.pt", "last.json"):
                self.artifacts.download(f"{self.epoch_prefix(done)}/{name}", self.work_dir / name)
            if self.best_epoch is not None:
                for name in ("best.pt", "best.json"):
                    self.artifacts.download(
                        f"{self.epoch_prefix(self.best_epoch)}/{name}", self.work_dir / name
                    )
        except ArtifactNotFound as exc:
            # The database says these exist; someone deleted them. Starting over is the only way on.
            log.warning(
                "job %s: checkpoint of epoch %d missing (%s); training starts over", self.job_id, done, exc
            )
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir.mkdir(parents=True)
            self.best_epoch = None
            return 0
        log.info("job %s resumes after epoch %d (best so far: epoch %s)", self.job_id, done, self.best_epoch)
        return done

    # -- training
    def _on_epoch_end(self, ep: EpochResult) -> None:
        prefix = self.epoch_prefix(ep.epoch)
        # Best before last: a crash in between leaves the database pointing at the previous epoch, whose
        # files are all still there (older epochs are pruned only after the pointer moves).
        if ep.is_best:
            self.artifacts.put_file(f"{prefix}/best.pt", ep.best_path)
            self.artifacts.put_file(f"{prefix}/best.json", sidecar_path(ep.best_path))
        self.artifacts.put_file(f"{prefix}/last.pt", ep.last_path)
        self.artifacts.put_file(f"{prefix}/last.json", sidecar_path(ep.last_path))
        summary = ep.summary()
        metrics = model_versions.finite_json(
            {
                **summary,
                "is_best": ep.is_best,
                "run": self.owner,
                "resumed_after_epoch": self.start_epoch,
                "checkpoint": prefix,
            }
        )
        with self.session() as session:
            stored = jobs.record_epoch(
                session,
                self.job_id,
                self.owner,
                epoch=ep.epoch,
                train_loss=ep.train_loss,
                val_loss=_num(ep.val_loss),
                val_accuracy=_num(ep.evaluation.accuracy),
                val_rmse=_num(ep.evaluation.rmse),
                duration_s=ep.duration_s,
                metrics=metrics,
            )
        if not stored:
            raise LeaseLost(self.job_id)
        if ep.is_best:
            self.best_epoch = ep.epoch
        self._current_epoch = ep.epoch
        log.info(
            "job %s epoch %d/%d: train loss %.4f, val loss %.4f, val accuracy %.3f (%.1fs)%s",
            self.job_id,
            ep.epoch,
            ep.epochs,
            ep.train_loss,
            ep.val_loss,
            ep.evaluation.accuracy,
            ep.duration_s,
            " best" if ep.is_best else "",
        )
        self._prune(ep.epoch)
        if self.trial is not None:
            self.trial.report(ep)  # raises optuna.TrialPruned when the study's pruner says so

    def _prune(self, current: int) -> None:
        """Drop checkpoints nothing points at any more: only the newest epoch's last.* (what the database
        points at) and the best epoch's best.* are needed to resume. Best-effort: storage, not correctness."""
        keep = {f"{self.epoch_prefix(current)}/last.pt", f"{self.epoch_prefix(current)}/last.json"}
        if self.best_epoch is not None:
            keep |= {
                f"{self.epoch_prefix(self.best_epoch)}/best.pt",
                f"{self.epoch_prefix(self.best_epoch)}/best.json",
            }
        try:
            for key in self.artifacts.list(f"jobs/{self.job_id}/epochs/"):
                if key not in keep:
                    self.artifacts.delete(key)
        except Exception:  # noqa: BLE001
            log.warning("job %s: could not prune old checkpoints", self.job_id, exc_info=True)

    def _delete_prefix(self, prefix: str) -> None:
        try:
            for key in self.artifacts.list(prefix):
                self.artifacts.delete(key)
        except Exception:  # noqa: BLE001 - leftover files cost storage, not correctness
            log.warning("could not delete %s", prefix, exc_info=True)
