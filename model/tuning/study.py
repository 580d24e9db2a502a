"""Running a study: trials are ordinary training runs that report a validation figure after every epoch.

Pruning uses Optuna's MedianPruner: after each epoch a trial whose figure is worse than the median of the
earlier trials at the same epoch stops (after ``startup_trials`` complete trials, never in its first
epoch). Median rather than successive halving because studies here are small (a dozen trials of a few
epochs): the median rule needs no resource schedule to tune (ASHA's min resource and reduction factor
assume many more trials than a CPU host runs), decides from the trials that exist, and behaves the same
whether trials run one at a time or in parallel on several workers.

A trial whose loss stops being finite (a learning rate that diverges) is pruned at the end of that epoch,
whatever the pruner and even among the first trials: NaN weights predict one class for every bin, which can
score deceptively well, and such a run never recovers.

A pruned trial keeps its checkpoints of the epochs it finished, but never becomes the study's model. Its
``epochs_saved`` (planned minus finished) times its mean epoch time is the compute the pruner saved.

The value of a complete trial is the objective measured on the checkpoint the trial would register
(best.pt after calibration, as `binwatch train` reports it), not on its last epoch.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.abid import BinRecord, Source
from model.config import TrainConfig
from model.tuning.objective import Objective
from model.tuning.space import SearchSpace

if TYPE_CHECKING:  # pragma: no cover
    import optuna

log = logging.getLogger(__name__)

PRUNERS = ("median", "none")
DEFAULT_PRUNER = "median"


class TrialCancelled(RuntimeError):
    """The study was cancelled while this trial ran."""


def make_pruner(name: str, startup_trials: int = 2) -> optuna.pruners.BasePruner:
    import optuna

    if name == "median":
        # n_warmup_steps=1: the earliest a trial is judged is after its first epoch (steps are epochs).
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


def open_study(
    storage: str | optuna.storages.BaseStorage,
    name: str,
    objective: Objective,
    pruner: str = DEFAULT_PRUNER,
    seed: int = 0,
    startup_trials: int = 2,
) -> optuna.Study:
    """Create the study in ``storage`` (an Optuna storage or its URL), or load it if it exists."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=storage,
        study_name=name,
        direction=objective.direction,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, max(2, startup_trials))),
        pruner=make_pruner(pruner, startup_trials),
        load_if_exists=True,
    )


def trial_config(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """The base configuration with a trial's parameters on top, validated as a whole."""
    return TrainConfig.model_validate({**base.model_dump(), **params})


@dataclass
class TrialRun:
    """What one trial did, for progress displays and records."""

    number: int
    params: dict[str, Any]
    epochs: int
    values: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


def run_trial(
    trial: optuna.Trial,
    base: TrainConfig,
    space: SearchSpace,
    objective: Objective,
    source: Source,
    train_records: Sequence[BinRecord],
    val_records: Sequence[BinRecord],
    out_dir: Path,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[TrialRun], None] | None = None,
    host: str | None = None,
) -> float:
    """Train one trial in ``out_dir``; returns its objective value or raises optuna.TrialPruned.

    Per-epoch values go to Optuna (``trial.report``) and into the trial's user attributes (``values``,
    ``epoch_seconds``), so anyone reading the storage sees the curve while the trial runs.
    """
    import optuna

    from model.training import TrainHooks, train

    params = space.suggest(trial)
    try:
        cfg = trial_config(base, params)
    except ValueError as exc:
        # A combination the settings refuse (each bound alone was checked when the space was declared).
        trial.set_user_attr("error", f"settings refused: {exc}")
        raise
    run = TrialRun(trial.number, params, cfg.epochs)
    trial.set_user_attr("host", host or socket.gethostname())
    trial.set_user_attr("epochs_planned", cfg.epochs)
    started = time.monotonic()

    def epoch_end(ep: Any) -> None:
        if not (math.isfinite(ep.train_loss) and math.isfinite(ep.val_loss)):
            # Diverged (NaN/inf weights predict one class for every bin, which can even score well): it
            # will not recover, so it stops now whatever the pruner, and Optuna records NaN for the epoch.
            trial.report(float("nan"), ep.epoch)
            _record_saving(trial, ep, run, started, run.epoch_seconds + [float(ep.duration_s)])
            raise optuna.TrialPruned(f"diverged in epoch {ep.epoch}: the loss is not finite")
        value = objective.value(ep.summary())
        run.values.append(value)
        run.epoch_seconds.append(float(ep.duration_s))
        trial.report(value, ep.epoch)
        trial.set_user_attr("values", run.values)
        trial.set_user_attr("epoch_seconds", run.epoch_seconds)
        if on_epoch is not None:
            on_epoch(run)
        if ep.epoch < ep.epochs and trial.should_prune():
            _record_saving(trial, ep, run, started, run.epoch_seconds)
            raise optuna.TrialPruned(f"pruned after epoch {ep.epoch}: {objective.name} {value:.4f}")

    stopped = False

    def stop() -> bool:
        nonlocal stopped
        stopped = bool(should_stop and should_stop())
        return stopped

    result = train(
        cfg,
        source,
        train_records,
        val_records,
        out_dir,
        TrainHooks(on_epoch_end=epoch_end, should_stop=stop if should_stop else None),
        # A retried trial (its worker died) continues from its last finished epoch.
        resume=True,
        progress=progress,
    )
    if stopped:
        raise TrialCancelled(f"trial {trial.number} stopped: the study was cancelled")
    value = objective.value(result.evaluation.headline())
    if not math.isfinite(value):
        raise ValueError(f"trial {trial.number} gave a non-finite {objective.name}: {value}")
    trial.set_user_attr("checkpoint", str(result.best_path))
    trial.set_user_attr("duration_s", round(time.monotonic() - started, 1))
    trial.set_user_attr("figures", {k: float(v) for k, v in result.evaluation.headline().items()})
    return value


def _record_saving(trial: Any, ep: Any, run: TrialRun, started: float, seconds: list[float]) -> None:
    """What stopping now saves: the epochs left, at this trial's mean epoch time."""
    left = ep.epochs - ep.epoch
    trial.set_user_attr("epochs_saved", left)
    trial.set_user_attr("seconds_saved", round(left * sum(seconds) / max(1, len(seconds)), 1))
    trial.set_user_attr("duration_s", round(time.monotonic() - started, 1))


# -- reading a study back ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialSummary:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    params: dict[str, Any]
    value: float | None
    values: list[float]
    duration_s: float | None
    host: str | None
    epochs_done: int
    epochs_planned: int | None
    seconds_saved: float | None
    error: str | None
    baseline: bool = False

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def summarise(study: optuna.Study) -> list[TrialSummary]:
    out = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        duration = attrs.get("duration_s")
        if duration is None and t.datetime_start and t.datetime_complete:
            duration = (t.datetime_complete - t.datetime_start).total_seconds()
        out.append(
            TrialSummary(
                number=t.number,
                state=t.state.name,
                params=dict(t.params),
                value=t.value if t.state.name == "COMPLETE" else None,
                values=[float(t.intermediate_values[k]) for k in sorted(t.intermediate_values)],
                duration_s=duration,
                host=attrs.get("host"),
                epochs_done=len(t.intermediate_values),
                epochs_planned=attrs.get("epochs_planned"),
                seconds_saved=attrs.get("seconds_saved"),
                error=attrs.get("error"),
                baseline=bool(attrs.get("baseline")),
            )
        )
    return out


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best complete trial, or None when none completed."""
    try:
        return study.best_trial
    except ValueError:
        return None
