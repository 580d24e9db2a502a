"""`binwatch tune`: a hyperparameter study on this host (Optuna), with the same data and training options
as `binwatch train`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from binwatch.cli.ml import DEFAULT_RUNS, fail, merge_overrides, read_dataset
from binwatch.cli.options import (
    Arch,
    BatchSize,
    Device,
    Endpoint,
    Epochs,
    FileList,
    Ids,
    ImageSize,
    Limit,
    Lr,
    MaxCount,
    MaxTrainBatches,
    MinCount,
    Recipe,
    TrainSettings,
    ValFraction,
)
from model.subsets import SubsetSpec, split_records

console = Console()


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def tune(
    data: Annotated[str, typer.Argument(help="ABID-layout dataset: a folder or s3://bucket/prefix.")],
    space: Annotated[
        list[str],
        typer.Option(
            "--space",
            help="A setting to search (repeatable): NAME=LOW..HIGH[:log] (float or int range, :step=N for "
            "ints) or NAME=A,B,... (choices). Any `binwatch train --set` setting, e.g. lr=1e-4..1e-2:log, "
            "image_size=96,112,128, epochs=2..6.",
        ),
    ],
    trials: Annotated[
        int | None, typer.Option(min=1, help="Trials to finish (complete, pruned or failed). Default 12.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(min=1, help="Start no new trial after this many seconds.")
    ] = None,
    objective: Annotated[
        str, typer.Option(help="accuracy (maximise), rmse (minimise) or accuracy_0-5 (maximise).")
    ] = "accuracy",
    pruner: Annotated[
        str, typer.Option(help="median: stop trials worse than the median at the same epoch; none.")
    ] = "median",
    out: Annotated[Path | None, typer.Option(help="Study folder (default runs/tune-<time>).")] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna storage URL (default: sqlite file OUT/study.db). Re-run to continue."),
    ] = None,
    study_name: Annotated[str, typer.Option(help="Study name inside the storage.")] = "binwatch-tune",
    recipe: Recipe = None,
    arch: Arch = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    image_size: ImageSize = None,
    device: Device = None,
    max_train_batches: MaxTrainBatches = None,
    settings: TrainSettings = None,
    val_fraction: ValFraction = 0.15,
    endpoint_url: Endpoint = None,
    min_count: MinCount = None,
    max_count: MaxCount = None,
    ids: Ids = None,
    file_list: FileList = None,
    limit: Limit = None,
    seed: Annotated[int, typer.Option(help="Seed for sampling the bins, the split and the sampler.")] = 0,
    baseline: Annotated[
        bool,
        typer.Option(help="Make the first trial the recipe's own values of the searched settings."),
    ] = True,
) -> None:
    """Search training settings with Optuna on this host: each trial is a training run on the same data,
    stopped early by the pruner when it falls behind; the best trial's checkpoint is copied to OUT/best.pt.

    The base settings come from --recipe and the train options; --space settings vary per trial. The study
    is stored in OUT/study.db, so running the same command again continues it. Pictures (optimisation
    history, parameter importances) and study.json are written to OUT.

    Example: binwatch tune ../shared/abid --recipe cpu-quick --limit 400 --trials 8
        --space lr=3e-4..3e-2:log --space image_size=64,96 --set epochs=3
    """
    from model.recipes import recipe_config
    from model.tuning.local import run_local_study
    from model.tuning.objective import objective as pick_objective
    from model.tuning.space import SearchSpace, SpaceError
    from model.tuning.study import PRUNERS, TrialRun, TrialSummary

    try:
        search = SearchSpace.parse(space)
        goal = pick_objective(objective)
        if pruner not in PRUNERS:
            raise ValueError(f"unknown pruner {pruner!r}; choose one of {', '.join(PRUNERS)}")
        options = dict(
            architecture=arch,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            image_size=image_size,
            device=device,
            seed=seed,
            max_train_batches=max_train_batches,
        )
        base = recipe_config(recipe, **merge_overrides(options, settings))
    except SpaceError as exc:
        raise fail(f"--space {exc}") from exc
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if trials is None and timeout is None:
        trials = 12
    spec = SubsetSpec(min_count, max_count, ids, file_list, None, limit, seed)
    source, records = read_dataset(data, endpoint_url, spec)
    train_recs, val_recs = split_records(records, val_fraction, seed)
    out = out or DEFAULT_RUNS / f"tune-{datetime.now():%Y%m%d-%H%M%S}"

    shown = Table(title=f"search space ({goal.name}: {goal.direction}, pruner {pruner})")
    for column in ("setting", "kind", "values"):
        shown.add_column(column)
    for row in search.rows():
        shown.add_row(*row)
    console.print(shown)
    budget = " and ".join(
        x for x in (f"{trials} trials" if trials else "", f"{timeout:g} s" if timeout else "") if x
    )
    console.print(
        f"base: {base.recipe} ({base.architecture}, {base.epochs} epochs at {base.image_size}px); "
        f"{len(train_recs)} train bins, {len(val_recs)} val bins; budget {budget} -> {out}"
    )

    def start(number: int, _: dict) -> None:
        console.rule(f"trial {number}")

    def epoch(run: TrialRun) -> None:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in run.params.items())
        console.print(
            f"trial {run.number} ({params}) epoch {len(run.values)}/{run.epochs}: "
            f"{goal.name} {run.values[-1]:.4f} ({run.epoch_seconds[-1]:.0f}s)"
        )

    def end(trial: TrialSummary) -> None:
        what = f"value {trial.value:.4f}" if trial.value is not None else (trial.error or "")
        if trial.state == "PRUNED":
            saved = trial.seconds_saved or 0
            what = f"after {trial.epochs_done} of {trial.epochs_planned} epochs, saved ~{saved:.0f}s"
        console.print(f"trial {trial.number}: [bold]{trial.state.lower()}[/] {escape(what)}")

    try:
        result = run_local_study(
            base,
            search,
            goal,
            source,
            train_recs,
            val_recs,
            out,
            trials,
            timeout_s=timeout,
            pruner=pruner,
            seed=seed,
            storage=storage,
            name=study_name,
            on_trial_start=start,
            on_epoch=epoch,
            on_trial_end=end,
            baseline=baseline,
        )
    except ValueError as exc:
        raise fail(str(exc)) from exc

    minutes = result.wall_time_s / 60
    table = Table(title=f"study {result.name}: {len(result.trials)} trials in {minutes:.1f} min")
    for column in ("#", "state", *search.names, goal.name, "epochs", "duration", "saved"):
        table.add_column(column, justify="right" if column not in ("state",) else "left")
    for t in result.trials:
        best = result.best is not None and t.number == result.best.number
        table.add_row(
            f"{t.number}{' *' if best else ''}{' (base)' if t.baseline else ''}",
            t.state.lower(),
            *(_fmt(t.params.get(n, "")) for n in search.names),
            f"{t.value:.4f}" if t.value is not None else "–",
            f"{t.epochs_done}/{t.epochs_planned or '?'}",
            f"{t.duration_s:.0f}s" if t.duration_s is not None else "–",
            f"{t.seconds_saved:.0f}s" if t.seconds_saved else "",
        )
    console.print(table)
    if result.best is None:
        raise fail("no trial completed; see the errors above", code=1)
    saved = sum(t.seconds_saved or 0 for t in result.trials)
    console.print(
        f"best: trial {result.best.number} with {goal.name} {result.best.value:.4f} "
        f"({', '.join(f'{k}={_fmt(v)}' for k, v in result.best.params.items())}); pruning saved ~{saved:.0f}s"
    )
    base_trial = next((t for t in result.trials if t.baseline and t.value is not None), None)
    if base_trial is not None:
        console.print(
            f"the recipe's own values (trial {base_trial.number}): {goal.name} {base_trial.value:.4f}"
        )
    console.print(f"best checkpoint: {result.best_checkpoint}")
    for name, path in result.pictures.items():
        console.print(f"{name}: {path}")
    for name, why in result.skipped_pictures.items():
        console.print(f"{name}: not drawn ({why})")


def register(app: typer.Typer) -> None:
    from binwatch.cli.helptext import command

    command(app)(tune)
