"""A study run on this host, one trial after another (``binwatch tune``): no server, no queue.

The study lives in an Optuna storage (default: ``<out>/study.db``, SQLite), so an interrupted study is
continued by running the same command again: finished trials are kept, a trial that was running when the
process died is marked failed, and the remaining budget of trials is run. Each trial trains in
``<out>/trial-<number>``; the best complete trial's checkpoint (with its sidecar and plots) is copied to
``<out>/best.pt``, where `binwatch models register` and `binwatch evaluate` take it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.abid import BinRecord, Source
from model.config import TrainConfig
from model.tuning.objective import Objective
from model.tuning.pictures import draw
from model.tuning.space import SearchSpace
from model.tuning.study import TrialRun, TrialSummary, best_trial, open_study, run_trial, summarise

SUMMARY = "study.json"


@dataclass
class LocalStudy:
    name: str
    storage: str
    out_dir: Path
    trials: list[TrialSummary]
    best: TrialSummary | None
    best_checkpoint: Path | None
    pictures: dict[str, Path] = field(default_factory=dict)
    skipped_pictures: dict[str, str] = field(default_factory=dict)
    wall_time_s: float = 0.0


def run_local_study(
    base: TrainConfig,
    space: SearchSpace,
    objective: Objective,
    source: Source,
    train_records: Sequence[BinRecord],
    val_records: Sequence[BinRecord],
    out_dir: Path,
    trials: int | None,
    timeout_s: float | None = None,
    pruner: str = "median",
    seed: int = 0,
    storage: str | None = None,
    name: str = "binwatch-tune",
    progress: bool = True,
    on_trial_start: Callable[[int, dict[str, Any]], None] | None = None,
    on_epoch: Callable[[TrialRun], None] | None = None,
    on_trial_end: Callable[[TrialSummary], None] | None = None,
    baseline: bool = True,
) -> LocalStudy:
    """Run trials until ``trials`` of them have finished (complete, pruned or failed) or ``timeout_s``.

    With ``baseline``, a new study's first trial is the base configuration's own values of the searched
    settings (when they lie inside the space), so the study always shows what it gained over them.
    """
    import optuna

    if trials is None and timeout_s is None:
        raise ValueError("give a number of trials, a time limit, or both")
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    study = open_study(storage, name, objective, pruner=pruner, seed=seed)
    _fail_orphans(study)
    if baseline and not study.get_trials(deepcopy=False):
        point = space.point_of(base.model_dump())
        if point is not None:
            study.enqueue_trial(point, user_attrs={"baseline": True})
    started = time.monotonic()
    finished_states = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.FAIL,
    )
    while True:
        done = len(study.get_trials(deepcopy=False, states=finished_states))
        if trials is not None and done >= trials:
            break
        if timeout_s is not None and time.monotonic() - started >= timeout_s:
            break
        trial = study.ask()
        if on_trial_start is not None:
            on_trial_start(trial.number, {})
        try:
            value = run_trial(
                trial,
                base,
                space,
                objective,
                source,
                train_records,
                val_records,
                out_dir / f"trial-{trial.number:03d}",
                progress=progress,
                on_epoch=on_epoch,
            )
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except (ValueError, RuntimeError, OSError) as exc:
            # One bad trial (a refused combination, a diverged run) does not end the study.
            if "error" not in trial.user_attrs:
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
        if on_trial_end is not None:
            summary = next(s for s in summarise(study) if s.number == trial.number)
            on_trial_end(summary)
    return finish(study, name, storage, out_dir, time.monotonic() - started)


def _fail_orphans(study: Any) -> None:
    """Trials left RUNNING by a process that died: mark them failed so the budget counts them."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def finish(study: Any, name: str, storage: str, out_dir: Path, wall_time_s: float) -> LocalStudy:
    """Copy the best trial's checkpoint to ``out_dir``, draw the pictures, write ``study.json``."""
    summaries = summarise(study)
    best = best_trial(study)
    best_summary = next((s for s in summaries if best is not None and s.number == best.number), None)
    checkpoint: Path | None = None
    if best is not None:
        source = Path(best.user_attrs["checkpoint"])
        checkpoint = out_dir / "best.pt"
        shutil.copyfile(source, checkpoint)
        sidecar = source.with_suffix(".json")
        if sidecar.is_file():
            shutil.copyfile(sidecar, checkpoint.with_suffix(".json"))
    pictures, skipped = draw(study, out_dir)
    result = LocalStudy(
        name, storage, out_dir, summaries, best_summary, checkpoint, pictures, skipped, wall_time_s
    )
    (out_dir / SUMMARY).write_text(
        json.dumps(
            {
                "study": name,
                "direction": study.direction.name.lower(),
                "best": best_summary.to_dict() if best_summary else None,
                "trials": [s.to_dict() for s in summaries],
                "best_checkpoint": str(checkpoint) if checkpoint else None,
                "pictures": {k: str(v) for k, v in pictures.items()},
                "skipped_pictures": skipped,
                "wall_time_s": round(wall_time_s, 1),
            },
            indent=2,
            default=str,
        )
    )
    return result
