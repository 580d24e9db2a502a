"""`binwatch tuning …`: hyperparameter studies as queued jobs, through the HTTP API (docs/tuning.md).

The same study as `binwatch tune`, but its trials run as training jobs on whichever `binwatch worker`
processes are up; these commands submit, list, show, follow and cancel it from any machine.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from binwatch.cli.api_client import DEFAULT_URL, Api, ApiKey, AsJson, Url, err, fail
from binwatch.cli.helptext import command
from binwatch.cli.options import (
    Arch,
    BatchSize,
    Endpoint,
    Epochs,
    ImageSize,
    Limit,
    Lr,
    MaxCount,
    MinCount,
    Recipe,
    Reviews,
    submitted_dataset,
)

console = Console(highlight=False)

app = typer.Typer(
    name="tuning",
    help="Submit, follow and cancel hyperparameter tuning jobs (trials run on the workers).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

FINISHED = ("succeeded", "failed", "cancelled")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _trial_table(job: dict[str, Any]) -> Table:
    table = Table(title=f"trials of tuning job {job['id']} ({job['objective']}, {job['direction']})")
    for col in ("#", "state", "params", "value", "per epoch", "time", "host", "note"):
        table.add_column(col, overflow="fold")
    for t in job.get("trial_list") or []:
        mark = " *" if t["number"] == job.get("best_trial") else ""
        note = "baseline" if t["baseline"] else ""
        if t.get("seconds_saved"):
            note = f"{note} saved {t['seconds_saved']:.0f} s".strip()
        if t.get("error"):
            note = f"{note} {t['error'][:60]}".strip()
        table.add_row(
            f"{t['number']}{mark}",
            t["state"].lower(),
            ", ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items()),
            _fmt(t["value"]),
            " ".join(f"{v:.3f}" for v in t["values"]),
            "-" if t["duration_s"] is None else f"{t['duration_s']:.0f} s",
            (t.get("host") or "-").split(" run ")[0],
            note,
        )
    return table


def _print_job(job: dict[str, Any]) -> None:
    table = Table(title=f"tuning job {job['id']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(job["counts"].items())) or "-"
    rows = [
        ("status", job["status"]),
        ("trials", f"{counts} (budget {job['trials']}, {job['parallelism']} at once)"),
        ("objective", f"{job['objective']} ({job['direction']}), pruner {job['pruner']}"),
        ("space", json.dumps(job["space"])),
        ("base", json.dumps(job["hyperparameters"])),
        (
            "best",
            f"trial {job['best_trial']}: {_fmt(job['best_value'])}" if job["best_trial"] is not None else "-",
        ),
        ("compute saved", f"{job['seconds_saved']:.0f} s by pruning"),
        ("model version", str(job.get("model_version_id") or "-")),
        ("promotion", job.get("promotion_decision") or f"policy {job['promotion_policy']}"),
        ("elapsed", "-" if job.get("elapsed_s") is None else f"{job['elapsed_s']:.0f} s"),
    ]
    for name, link in (job.get("pictures") or {}).items():
        rows.append((name, link))
    if job.get("error"):
        rows.append(("error", f"[red]{job['error']}[/]"))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    if job.get("trial_list"):
        console.print(_trial_table(job))


def _space(specs: list[str]) -> dict[str, Any]:
    from model.tuning.space import SearchSpace, SpaceError

    try:
        return SearchSpace.parse(specs).to_dict()
    except SpaceError as exc:
        raise fail(f"--space {exc}") from exc


def _points(points: list[str]) -> list[dict[str, Any]]:
    out = []
    for text in points:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise fail(f"--point {text!r} is not a JSON object such as '{{\"lr\": 0.003}}'") from exc
        if not isinstance(value, dict):
            raise fail(f"--point {text!r} is not a JSON object such as '{{\"lr\": 0.003}}'")
        out.append(value)
    return out


@command(app, "submit")
def submit(
    space: Annotated[
        list[str],
        typer.Option(
            "--space", help="A setting to search (repeatable), as for `binwatch tune`: lr=1e-4..1e-2:log."
        ),
    ],
    data: Annotated[
        list[str] | None,
        typer.Argument(
            help="ABID-layout datasets as the worker hosts see them (validation on the first one's val "
            "split). Optional with --reviews."
        ),
    ] = None,
    trials: Annotated[int, typer.Option(min=1, help="Trials in all (complete, pruned or failed).")] = 12,
    parallelism: Annotated[int, typer.Option(min=1, help="Trials running at once, at most.")] = 2,
    timeout: Annotated[
        int | None, typer.Option(min=60, help="Start no trial after this many seconds.")
    ] = None,
    objective: Annotated[str, typer.Option(help="accuracy, rmse or accuracy_0-5.")] = "accuracy",
    pruner: Annotated[str, typer.Option(help="median or none.")] = "median",
    point: Annotated[
        list[str] | None,
        typer.Option("--point", help="A JSON point to try first (repeatable): '{\"lr\": 0.003}'."),
    ] = None,
    recipe: Recipe = None,
    arch: Arch = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    image_size: ImageSize = None,
    policy: Annotated[str, typer.Option("--policy", help="never, if_better or always.")] = "if_better",
    name: Annotated[str | None, typer.Option(help="Name of the model version it registers.")] = None,
    endpoint_url: Endpoint = None,
    min_count: MinCount = None,
    max_count: MaxCount = None,
    limit: Limit = None,
    reviews: Reviews = False,
    seed: Annotated[int, typer.Option(help="Seed for sampling, splitting and the sampler.")] = 0,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the study until it ends.")] = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Queue a tuning job; prints its id (and follows it with --watch).

        binwatch tuning submit /data/abid --recipe cpu-quick --limit 2000 --space lr=1e-4..1e-2:log \\
            --space image_size=96,112,128 --trials 12 --parallelism 4 --watch
        binwatch tuning submit --reviews --recipe cpu-quick --space lr=1e-4..1e-2:log --trials 8
    """
    dataset = submitted_dataset(data, reviews) | {"seed": seed}
    for key, value in {
        "endpoint_url": endpoint_url,
        "min_count": min_count,
        "max_count": max_count,
        "limit": limit,
    }.items():
        if value is not None:
            dataset[key] = value
    hyper = {
        k: v
        for k, v in {
            "recipe": recipe,
            "architecture": arch,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "image_size": image_size,
        }.items()
        if v is not None
    }
    body: dict[str, Any] = {
        "dataset": dataset,
        "hyperparameters": hyper,
        "space": _space(space),
        "trials": trials,
        "parallelism": parallelism,
        "objective": objective,
        "pruner": pruner,
        "seed": seed,
        "points": _points(point or []),
        "promotion_policy": policy,
    }
    if timeout is not None:
        body["timeout_s"] = timeout
    if name:
        body["model_name"] = name
    api = Api(url, api_key)
    job = api.request("POST", "/v1/tuning-jobs", json=body)
    if as_json:
        sys.stdout.write(json.dumps(job) + "\n")
    else:
        console.print(
            f"queued tuning job [bold]{job['id']}[/] ({job['trials']} trials, {job['parallelism']} at once)"
        )
    if watch:
        _watch(api, job["id"], 2.0, as_json)


@command(app, "list")
def list_tuning(
    status: Annotated[list[str] | None, typer.Option(help="Only this status (repeatable).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 20,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """List tuning jobs, newest first."""
    params: list[tuple[str, str | int]] = [("limit", limit)] + [("status", s) for s in status or []]
    page = Api(url, api_key).request("GET", "/v1/tuning-jobs", params=params)
    if as_json:
        sys.stdout.write(json.dumps(page) + "\n")
        return
    table = Table(title="tuning jobs")
    for col in ("id", "status", "trials", "objective", "best", "model", "created"):
        table.add_column(col, overflow="fold")
    for job in page["items"]:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(job["counts"].items()))
        table.add_row(
            job["id"],
            job["status"],
            f"{counts} / {job['trials']}",
            job["objective"],
            _fmt(job["best_value"]),
            str(job.get("model_version_id") or "-"),
            job["created_at"][:19],
        )
    console.print(table)


@command(app, "show")
def show(
    tuning_id: Annotated[str, typer.Argument(help="Tuning job id.")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Show a study: every trial (params, state, per-epoch values, time, host), the best, the pictures."""
    job = Api(url, api_key).request("GET", f"/v1/tuning-jobs/{tuning_id}")
    if as_json:
        sys.stdout.write(json.dumps(job) + "\n")
    else:
        _print_job(job)


@command(app, "cancel")
def cancel(
    tuning_id: Annotated[str, typer.Argument(help="Tuning job id.")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Cancel a study: no more trials, running ones stop within seconds, no model version registered."""
    job = Api(url, api_key).request("POST", f"/v1/tuning-jobs/{tuning_id}/cancel")
    if as_json:
        sys.stdout.write(json.dumps(job) + "\n")
    else:
        console.print(f"tuning job {tuning_id} cancelled; its running trials stop at their next batch")


def _watch(api: Api, tuning_id: str, interval: float, as_json: bool) -> None:
    seen: dict[int, str] = {}
    while True:
        job = api.request("GET", f"/v1/tuning-jobs/{tuning_id}")
        for t in job.get("trial_list") or []:
            # WAITING: an enqueued point (the baseline, --point) that no worker has taken yet.
            if t["state"] != "WAITING" and seen.get(t["number"]) != t["state"]:
                seen[t["number"]] = t["state"]
                if as_json:
                    sys.stdout.write(json.dumps(t) + "\n")
                else:
                    params = ", ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items())
                    value = f" -> {_fmt(t['value'])}" if t["value"] is not None else ""
                    console.print(f"trial {t['number']} {t['state'].lower()}: {params}{value}")
        if job["status"] in FINISHED:
            break
        time.sleep(interval)
    if as_json:
        sys.stdout.write(json.dumps(job) + "\n")
    else:
        _print_job(job)
        if job.get("error"):
            err.print(f"[red]{job['error']}[/]")
    if job["status"] != "succeeded":
        raise typer.Exit(1)


@command(app, "watch")
def watch(
    tuning_id: Annotated[str, typer.Argument(help="Tuning job id.")],
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 2.0,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Follow a study, printing each trial as its state changes; exits 0 when it succeeds, 1 otherwise."""
    _watch(Api(url, api_key), tuning_id, interval, as_json)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="tuning", help="Submit, follow and cancel hyperparameter tuning jobs.")
