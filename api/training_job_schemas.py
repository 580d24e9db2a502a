"""The training-job API's bodies and answers (pydantic models at the edge), and how a stored job becomes an
answer. The routes are api/routes/training_jobs.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.training_groups import GroupMemberOut, group_out
from records.job_spec import DatasetSpec, Hyperparameters, PromotionPolicy
from records.orm import JOB_STATUSES, EpochMetric, TrainingJob, TrainingJobNode, utcnow
from records.text_rules import SafeLine

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "pruned"]
assert set(JobStatus.__args__) == set(JOB_STATUSES)  # type: ignore[attr-defined]


class TrainingJobCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset": {"uri": "/data/abid", "limit": 2000},
                    "hyperparameters": {"recipe": "cpu-quick", "epochs": 6},
                    "promotion_policy": "if_better",
                },
                {
                    "dataset": {"uri": "s3://my-bucket/abid/", "min_count": 0, "max_count": 10},
                    "hyperparameters": {"recipe": "gpu-full", "architecture": "resnet50", "k": 11},
                    "promotion_policy": "never",
                    "model_name": "resnet50-k11",
                },
                {
                    "dataset": {"uri": "/data/abid", "limit": 2000, "reviews": {}},
                    "hyperparameters": {"recipe": "cpu-quick", "epochs": 6},
                    "promotion_policy": "if_better",
                    "model_name": "with-reviews",
                },
            ]
        },
    )

    dataset: DatasetSpec
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    promotion_policy: PromotionPolicy = Field(
        default="if_better",
        description="After success: never promote; promote if_better (the active model is evaluated on this "
        "job's validation split and compared on the same metric); or always promote.",
    )
    model_name: SafeLine | None = Field(
        default=None, min_length=1, max_length=128, description="Name of the version it registers."
    )
    nodes: int = Field(
        default=1,
        ge=1,
        description="Worker hosts that train the job together as one DDP group, one `binwatch worker` each "
        "(BINWATCH_MAX_NODES). docs/training.md.",
    )
    procs_per_node: int = Field(
        default=1,
        ge=1,
        description="Training processes on each of those hosts: one per GPU on GPU hosts "
        "(BINWATCH_MAX_PROCS_PER_NODE). batch_size must be a multiple of nodes x procs_per_node.",
    )


class EpochOut(BaseModel):
    epoch: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    val_rmse: float | None
    duration_s: float
    metrics: dict[str, Any] = Field(
        description="Everything else measured after the epoch: per-subset accuracy/RMSE, ±1 accuracy, ECE, "
        "learning rate, whether it was the best so far, and which worker run trained it."
    )
    created_at: datetime


class JobTimings(BaseModel):
    queued_s: float | None = Field(description="From submission to the first start on a worker.")
    running_s: float | None = Field(description="From the first start to the end (or to now).")
    total_s: float | None = Field(description="From submission to the end (or to now).")
    mean_epoch_s: float | None = Field(description="Mean duration of the finished epochs.")


class TrainingJobOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b",
                    "status": "running",
                    "progress": "epoch 2 of 6",
                    "epoch": 2,
                    "epochs": 6,
                    "dataset": {"uri": "/data/abid", "limit": 2000, "seed": 0, "val_fraction": 0.15},
                    "hyperparameters": {"recipe": "cpu-quick"},
                    "config": {"architecture": "resnet18", "image_size": 112, "epochs": 6, "lr": 0.003},
                    "promotion_policy": "if_better",
                    "promotion_decision": None,
                    "cancel_requested": False,
                    "attempts": 1,
                    "host": "gpu-1 pid 7 run 9c1d2e3f",
                    "error": None,
                    "model_version_id": None,
                    "created_at": "2026-11-25T18:00:00Z",
                    "started_at": "2026-11-25T18:00:02Z",
                    "finished_at": None,
                    "heartbeat_at": "2026-11-25T18:03:10Z",
                    "timings": {"queued_s": 2.0, "running_s": 188.0, "total_s": 190.0, "mean_epoch_s": 90.5},
                    "metrics": [],
                }
            ]
        }
    )

    id: str
    status: JobStatus
    progress: str = Field(description="'epoch i of N': i epochs are finished and stored.")
    epoch: int = Field(description="Finished epochs; a job resumed elsewhere continues after this one.")
    epochs: int
    dataset: dict[str, Any]
    hyperparameters: dict[str, Any] = Field(description="What was asked for.")
    config: dict[str, Any] = Field(description="The full training configuration resolved at submission.")
    promotion_policy: PromotionPolicy
    promotion_decision: str | None = Field(description="Whether the model was promoted, and why.")
    cancel_requested: bool
    attempts: int = Field(
        description="How many workers have taken the job; one that dies running it is a used attempt "
        "(BINWATCH_JOB_MAX_ATTEMPTS), a clean hand-back on shutdown is not."
    )
    host: str | None = Field(description="The worker running (or that last ran) the job.")
    error: str | None
    model_version_id: int | None = Field(description="The model version the job registered.")
    nodes: int = Field(default=1, description="Hosts that train it together.")
    procs_per_node: int = Field(default=1, description="Training processes on each host.")
    group: list[GroupMemberOut] | None = Field(
        default=None,
        description="The workers of its newest training group, by node rank (multi-node jobs, in "
        "GET /v1/training-jobs/{id} only).",
    )
    tuning_job_id: str | None = Field(default=None, description="The tuning job this job is a trial of.")
    trial_number: int | None = Field(default=None, description="Its trial's number in the study.")
    usage: dict[str, Any] | None = Field(
        default=None,
        description="Where each run of the job ran (host, instance_type, capacity, device, processes), its "
        "phases' wall time (load, train, finish), and the estimated cost from BINWATCH_INSTANCE_PRICES "
        "(cost_usd; null when a run's instance type has no price). docs/cost.md.",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    timings: JobTimings
    metrics: list[EpochOut] | None = Field(
        default=None, description="One entry per finished epoch (in GET /v1/training-jobs/{id} only)."
    )
    latest_epoch: EpochOut | None = Field(
        default=None, description="The newest finished epoch (in listings only)."
    )


class TrainingJobPage(BaseModel):
    items: list[TrainingJobOut]
    next_cursor: str | None = Field(description="Pass as ?before= for the next page; null on the last page.")


# ------------------------------------------------------------------------------------------------ builders


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else max(0.0, (end - start).total_seconds())


def epoch_out(row: EpochMetric) -> EpochOut:
    return EpochOut(
        epoch=row.epoch,
        train_loss=row.train_loss,
        val_loss=row.val_loss,
        val_accuracy=row.val_accuracy,
        val_rmse=row.val_rmse,
        duration_s=row.duration_s,
        metrics=dict(row.metrics or {}),
        created_at=row.created_at,
    )


def job_out(
    job: TrainingJob,
    metrics: list[EpochMetric] | None = None,
    latest: EpochMetric | None = None,
    group: list[TrainingJobNode] | None = None,
) -> TrainingJobOut:
    now = utcnow()
    end = job.finished_at or now
    durations = [m.duration_s for m in metrics or []]
    params = dict(job.params or {})
    return TrainingJobOut(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        progress=f"epoch {job.epoch} of {job.epochs}",
        epoch=job.epoch,
        epochs=job.epochs,
        dataset=dict(job.dataset or {}),
        hyperparameters=dict(params.get("hyperparameters") or {}),
        config=dict(params.get("config") or {}),
        promotion_policy=job.promotion_policy,  # type: ignore[arg-type]
        promotion_decision=job.promotion_decision,
        cancel_requested=job.cancel_requested,
        attempts=job.attempts or 0,
        host=job.host,
        error=job.error,
        model_version_id=job.model_version_id,
        nodes=job.nodes,
        procs_per_node=job.procs_per_node,
        group=group_out(group) if group is not None else None,
        tuning_job_id=job.tuning_job_id,
        trial_number=job.trial_number,
        usage=job.usage,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        heartbeat_at=job.heartbeat_at,
        timings=JobTimings(
            queued_s=_seconds(job.created_at, job.started_at),
            running_s=_seconds(job.started_at, end) if job.started_at else None,
            total_s=_seconds(job.created_at, end),
            mean_epoch_s=sum(durations) / len(durations) if durations else None,
        ),
        metrics=[epoch_out(m) for m in metrics] if metrics is not None else None,
        latest_epoch=epoch_out(latest) if latest is not None else None,
    )
