"""A tuning job's bodies at the API edge (pydantic), and how a study is shown: its trials, the best so far,
the compute the pruner saved, the cost (``tuning_out``). Used by api/routes/tuning_jobs.py and the console.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from model.tuning.objective import OBJECTIVES, objective
from model.tuning.study import PRUNERS, summarise
from records import tuning_jobs
from records.job_spec import DatasetSpec, Hyperparameters, PromotionPolicy
from records.orm import TUNING_STATUSES, TrainingJob, TuningJob, utcnow
from records.text_rules import SafeLine
from records.tuning_storage import load_study
from settings import Settings

TuningStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
assert set(TuningStatus.__args__) == set(TUNING_STATUSES)  # type: ignore[attr-defined]
ObjectiveName = Literal["accuracy", "rmse", "accuracy_0-5"]
PrunerName = Literal["median", "none"]
assert set(PrunerName.__args__) == set(PRUNERS)  # type: ignore[attr-defined]
assert set(ObjectiveName.__args__) == set(OBJECTIVES)  # type: ignore[attr-defined]


class SpaceParam(BaseModel):
    """One searched setting: a float or int range (``log``, ``step`` for ints) or a list of choices."""

    # strict: "log": 0 or "low": "1" is refused rather than coerced (the document says boolean, number).
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = Field(default=None, ge=1)
    choices: list[float | int | bool | Annotated[SafeLine, Field(max_length=64)]] | None = Field(
        default=None, max_length=64
    )

    def as_space_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude_defaults=False)


class TuningJobCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "dataset": {"uri": "/data/abid", "limit": 2000},
                    "hyperparameters": {"recipe": "cpu-quick"},
                    "space": {
                        "lr": {"type": "float", "low": 0.0003, "high": 0.01, "log": True},
                        "image_size": {"type": "categorical", "choices": [96, 112, 128]},
                    },
                    "objective": "accuracy",
                    "trials": 12,
                    "parallelism": 2,
                }
            ]
        },
    )

    dataset: DatasetSpec
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="The base configuration (a recipe and overrides)."
    )
    space: dict[Annotated[str, Field(max_length=64)], SpaceParam] = Field(
        description="Setting name -> range or choices; any setting `binwatch train --set` accepts.",
        max_length=32,
    )
    objective: ObjectiveName = Field(
        default="accuracy", description="accuracy and accuracy_0-5 are maximised, rmse minimised."
    )
    pruner: PrunerName = Field(
        default="median", description="median: stop a trial whose epoch is worse than the median so far."
    )
    trials: int = Field(default=12, ge=1, description="Trials in all (complete, pruned or failed).")
    timeout_s: int | None = Field(
        default=None, ge=60, description="No trial starts after this many seconds; running ones finish."
    )
    parallelism: int = Field(default=2, ge=1, le=64, description="Trials running at once, at most.")
    seed: int = Field(default=0, description="The sampler's seed.")
    points: list[
        dict[
            Annotated[str, Field(max_length=64)],
            float | int | bool | Annotated[SafeLine, Field(max_length=64)],
        ]
    ] = Field(
        default_factory=list,
        max_length=32,
        description="Points of the space to try first, after the base configuration (Optuna's "
        "enqueue_trial; a warm start from what you already know). Each names every searched setting.",
    )
    baseline: bool = Field(
        default=True, description="Try the base configuration's own values first (when inside the space)."
    )
    promotion_policy: PromotionPolicy = "if_better"
    model_name: SafeLine | None = Field(default=None, min_length=1, max_length=128)


class TrialOut(BaseModel):
    number: int
    state: str = Field(description="COMPLETE, PRUNED, FAIL, RUNNING or WAITING (Optuna's trial states).")
    params: dict[str, Any]
    value: float | None
    values: list[float] = Field(description="The objective after every finished epoch.")
    duration_s: float | None
    host: str | None
    epochs_done: int
    epochs_planned: int | None
    seconds_saved: float | None = Field(description="A pruned trial's epochs left x its mean epoch time.")
    error: str | None
    baseline: bool = Field(description="The base configuration's own values (the study's first trial).")
    training_job_id: str | None
    job_status: str | None


class TuningJobOut(BaseModel):
    id: str
    status: TuningStatus
    dataset: dict[str, Any]
    hyperparameters: dict[str, Any]
    config: dict[str, Any] = Field(description="The base training configuration, resolved at submission.")
    space: dict[str, Any]
    objective: str
    direction: str
    pruner: str
    trials: int
    parallelism: int
    timeout_s: int | None
    promotion_policy: PromotionPolicy
    promotion_decision: str | None
    cancel_requested: bool
    model_version_id: int | None = Field(description="The version registered from the best trial.")
    best_trial: int | None
    best_value: float | None
    counts: dict[str, int] = Field(description="Trials by state.")
    seconds_saved: float = Field(description="Compute the pruner saved (sum over pruned trials).")
    cost_usd: float | None = Field(
        description="Estimated cost of its trial jobs so far (null when a run had no price; docs/cost.md)."
    )
    pictures: dict[str, str] = Field(description="Picture name -> URL under this API.")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_s: float | None
    trial_list: list[TrialOut] | None = Field(
        default=None, description="Every trial (in GET /v1/tuning-jobs/{id} only)."
    )


class TuningJobPage(BaseModel):
    items: list[TuningJobOut]
    next_cursor: str | None


def trials_out(settings: Settings, job: TuningJob, rows: list[TrainingJob]) -> list[TrialOut]:
    try:
        study = load_study(settings.resolved_tuning_storage_url, job.study_name)
    except KeyError:  # the study was never created (the submission failed half-way)
        return []
    by_number = {r.trial_number: r for r in rows if r.trial_number is not None}
    out = []
    for s in summarise(study):
        row = by_number.get(s.number)
        out.append(
            TrialOut(
                **s.to_dict(), training_job_id=row.id if row else None, job_status=row.status if row else None
            )
        )
    return out


def cost_of(rows: list[TrainingJob]) -> float | None:
    usages = [r.usage for r in rows if r.usage]
    if not usages or any(u.get("cost_usd") is None for u in usages):
        return None
    return round(sum(float(u["cost_usd"]) for u in usages), 6)


def tuning_out(
    request: Request, settings: Settings, job: TuningJob, rows: list[TrainingJob], detail: bool
) -> TuningJobOut:
    params = dict(job.params or {})
    trials = trials_out(settings, job, rows)
    # Counted by trial job: one that no worker has asked a trial for yet is "queued" (even if claimed),
    # and a trial just asked but not yet linked to its job is not counted twice.
    linked = {r.trial_number for r in rows if r.trial_number is not None}
    counts: dict[str, int] = {}
    for t in trials:
        if t.state == "RUNNING" and t.number not in linked:
            continue
        counts[t.state.lower()] = counts.get(t.state.lower(), 0) + 1
    queued = sum(1 for r in rows if r.status in tuning_jobs.ACTIVE_STATUSES and r.trial_number is None)
    if queued:
        counts["queued"] = queued
    best = None
    if job.best_trial is not None:
        best = next((t for t in trials if t.number == job.best_trial), None)
    else:
        complete = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
        if complete:
            pick = max if objective(params["objective"]).direction == "maximize" else min
            best = pick(complete, key=lambda t: t.value or 0.0)
    end = job.finished_at or utcnow()
    return TuningJobOut(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        dataset=dict(job.dataset or {}),
        hyperparameters=dict(params.get("hyperparameters") or {}),
        config=dict(params.get("config") or {}),
        space=dict(params.get("space") or {}),
        objective=params["objective"],
        direction=objective(params["objective"]).direction,
        pruner=params.get("pruner", "median"),
        trials=job.trials,
        parallelism=job.parallelism,
        timeout_s=job.timeout_s,
        promotion_policy=job.promotion_policy,  # type: ignore[arg-type]
        promotion_decision=job.promotion_decision,
        cancel_requested=job.cancel_requested,
        model_version_id=job.model_version_id,
        best_trial=best.number if best else None,
        best_value=best.value if best else None,
        counts=counts,
        seconds_saved=round(sum(t.seconds_saved or 0.0 for t in trials), 1),
        cost_usd=cost_of(rows),
        pictures={
            name: str(request.url_for("get_tuning_picture", tuning_id=job.id, name=name))
            for name in (job.pictures or {})
        },
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        elapsed_s=round((end - job.started_at).total_seconds(), 1) if job.started_at else None,
        trial_list=trials if detail else None,
    )
