"""`binwatch jobs …` (training jobs over the HTTP API) and `binwatch worker` (the process that runs them).

The jobs commands only talk HTTP, so they work from any laptop against a remote deployment; the
worker command starts a Celery worker on this host (a GPU host in production, see docs/deployment.md).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from binwatch.cli.api_client import DEFAULT_URL, Api, ApiKey, AsJson, Url, err, fail
from binwatch.cli.cost import usage_lines
from binwatch.cli.helptext import command
from binwatch.cli.options import (
    Arch,
    BatchSize,
    Classes,
    Endpoint,
    Epochs,
    ImageSize,
    K,
    Limit,
    Lr,
    MaxCount,
    MaxTrainBatches,
    MinCount,
    Optimizer,
    OutOfRange,
    Recipe,
    Reviews,
    Schedule,
    submitted_dataset,
)

console = Console(highlight=False)

app = typer.Typer(
    name="jobs",
    help="Submit, follow and cancel training jobs through the HTTP API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

FINISHED = ("succeeded", "failed", "cancelled")


def _epoch_row(m: dict[str, Any]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    best = " *best*" if (m.get("metrics") or {}).get("is_best") else ""
    return (
        f"epoch {m['epoch']}: train loss {num(m['train_loss'])}, val loss {num(m.get('val_loss'))}, "
        f"val accuracy {pct(m.get('val_accuracy'))}, RMSE {num(m.get('val_rmse'))} "
        f"({m['duration_s']:.1f}s){best}"
    )


def _group_lines(job: dict[str, Any]) -> list[tuple[str, str]]:
    nodes, procs = job.get("nodes") or 1, job.get("procs_per_node") or 1
    if nodes * procs == 1:
        return []
    lines = [("group", f"{nodes} node(s) x {procs} process(es)")]
    for member in job.get("group") or []:
        lines.append((f"  node {member['node_rank']}", f"{member['host']} at {member['address']}"))
    return lines


def _print_job(job: dict[str, Any]) -> None:
    table = Table(title=f"training job {job['id']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows = [
        (
            "status",
            job["status"]
            + (" (cancel requested)" if job.get("cancel_requested") and job["status"] == "running" else ""),
        ),
        ("progress", job["progress"]),
        ("dataset", json.dumps(job["dataset"])),
        ("hyperparameters", json.dumps(job["hyperparameters"])),
        ("promotion policy", job["promotion_policy"]),
        ("promotion decision", job.get("promotion_decision") or "-"),
        ("model version", str(job.get("model_version_id") or "-")),
        ("host", job.get("host") or "-"),
        *_group_lines(job),
        ("created", job["created_at"]),
        ("started", job.get("started_at") or "-"),
        ("finished", job.get("finished_at") or "-"),
    ]
    timings = job.get("timings") or {}
    if timings.get("running_s") is not None:
        rows.append(("running", f"{timings['running_s']:.0f} s"))
    if job.get("error"):
        rows.append(("error", f"[red]{job['error']}[/]"))
    rows += usage_lines(job)
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    for m in job.get("metrics") or []:
        console.print("  " + _epoch_row(m))


def _read_ids(ids: Path | None, file_list: Path | None) -> list[str] | None:
    """Ids from an id file and/or a Udacity file_list.json, sent inline: the workers may not see the files."""
    from model.abid import DatasetError
    from model.subsets import read_id_list, read_udacity_file_list

    chosen: set[str] | None = None
    try:
        if ids is not None:
            chosen = set(read_id_list(ids))
        if file_list is not None:
            listed = set(read_udacity_file_list(file_list))
            chosen = listed if chosen is None else chosen & listed
    except DatasetError as exc:
        raise fail(str(exc)) from exc
    return sorted(chosen) if chosen is not None else None


@command(app, "submit")
def submit(
    data: Annotated[
        list[str] | None,
        typer.Argument(
            help="ABID-layout datasets as the worker hosts see them: folders or s3://bucket/prefix; "
            "validation is on the first one's val split. Optional with --reviews."
        ),
    ] = None,
    recipe: Recipe = None,
    arch: Arch = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    image_size: ImageSize = None,
    k: K = None,
    classes: Classes = None,
    out_of_range: OutOfRange = None,
    optimizer: Optimizer = None,
    schedule: Schedule = None,
    max_train_batches: MaxTrainBatches = None,
    time_limit: Annotated[
        int | None, typer.Option(help="Soft time limit in seconds (default: the deployment's).")
    ] = None,
    policy: Annotated[
        str, typer.Option("--policy", help="Promotion policy: never, if_better or always.")
    ] = "if_better",
    name: Annotated[str | None, typer.Option(help="Name of the model version the job registers.")] = None,
    endpoint_url: Endpoint = None,
    min_count: MinCount = None,
    max_count: MaxCount = None,
    ids: Annotated[
        Path | None, typer.Option("--ids", help="File with one bin id per line (read here, sent inline).")
    ] = None,
    file_list: Annotated[
        Path | None, typer.Option("--file-list", help="Udacity-style file_list.json (read here).")
    ] = None,
    limit: Limit = None,
    reviews: Reviews = False,
    val_fraction: Annotated[
        float | None, typer.Option(help="Validation share when the data has no manifest split.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling, splitting and training.")] = None,
    nodes: Annotated[
        int, typer.Option(min=1, help="Worker hosts that train it together as one DDP group.")
    ] = 1,
    procs_per_node: Annotated[
        int, typer.Option(min=1, help="Training processes on each host (one per GPU on GPU hosts).")
    ] = 1,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job until it finishes.")] = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Submit a training job; prints its id (and follows it with --watch).

    The options are those of `binwatch train`; the dataset path must be readable by the worker hosts.
    --reviews adds the photos reviewed in the console (the subset options select ABID bins only).

        binwatch jobs submit /data/abid --recipe cpu-quick --limit 2000 --policy if_better --watch
        binwatch jobs submit s3://bucket/abid/ --recipe gpu-full --nodes 2 --procs-per-node 4
        binwatch jobs submit /data/abid --limit 2000 --reviews --recipe cpu-quick
        binwatch jobs submit /data/abid /data/abid-extra --policy if_better
    """
    dataset = submitted_dataset(data, reviews)
    for key, value in {
        "endpoint_url": endpoint_url,
        "min_count": min_count,
        "max_count": max_count,
        "limit": limit,
        "val_fraction": val_fraction,
        "seed": seed,
        "ids": _read_ids(ids, file_list),
    }.items():
        if value is not None:
            dataset[key] = value
    hyper = {
        key: value
        for key, value in {
            "recipe": recipe,
            "architecture": arch,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "image_size": image_size,
            "k": k,
            "classes": classes,
            "out_of_range": out_of_range,
            "optimizer": optimizer,
            "schedule": schedule,
            "seed": seed,
            "max_train_batches": max_train_batches,
            "time_limit_seconds": time_limit,
        }.items()
        if value is not None
    }
    body: dict[str, Any] = {"dataset": dataset, "hyperparameters": hyper, "promotion_policy": policy}
    if nodes * procs_per_node > 1:
        body |= {"nodes": nodes, "procs_per_node": procs_per_node}
    if name:
        body["model_name"] = name
    api = Api(url, api_key)
    job = api.request("POST", "/v1/training-jobs", json=body)
    if as_json:
        sys.stdout.write(json.dumps(job) + "\n")
    else:
        console.print(f"queued training job [bold]{job['id']}[/] ({job['progress']})")
    if watch:
        _watch(api, job["id"], 2.0, as_json)


@command(app, "list")
def list_jobs(
    status: Annotated[list[str] | None, typer.Option(help="Only jobs with this status (repeatable).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many jobs.")] = 20,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """List training jobs, newest first."""
    params: list[tuple[str, str | int]] = [("limit", limit)] + [("status", s) for s in status or []]
    page = Api(url, api_key).request("GET", "/v1/training-jobs", params=params)
    if as_json:
        sys.stdout.write(json.dumps(page) + "\n")
        return
    table = Table(title="training jobs")
    for col in ("id", "status", "progress", "val accuracy", "model", "created", "error"):
        table.add_column(col, overflow="fold")
    for job in page["items"]:
        latest = job.get("latest_epoch") or {}
        acc = latest.get("val_accuracy")
        table.add_row(
            job["id"],
            job["status"],
            job["progress"],
            "-" if acc is None else f"{acc:.1%}",
            str(job.get("model_version_id") or "-"),
            job["created_at"][:19],
            (job.get("error") or "")[:80],
        )
    console.print(table)


@command(app, "show")
def show(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Show one job: status, epoch i of N, per-epoch metrics, timings, host, error, model version."""
    job = Api(url, api_key).request("GET", f"/v1/training-jobs/{job_id}")
    if as_json:
        sys.stdout.write(json.dumps(job) + "\n")
    else:
        _print_job(job)


@command(app, "cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Cancel a job: a queued one at once, a running one within seconds (at its next batch)."""
    job = Api(url, api_key).request("POST", f"/v1/training-jobs/{job_id}/cancel")
    if as_json:
        sys.stdout.write(json.dumps(job) + "\n")
    elif job["status"] == "cancelled":
        console.print(f"job {job_id} cancelled")
    else:
        console.print(
            f"job {job_id}: cancel requested; it stops at its next batch (binwatch jobs watch {job_id})"
        )


def _watch(api: Api, job_id: str, interval: float, as_json: bool) -> None:
    seen = 0
    status = None
    while True:
        job = api.request("GET", f"/v1/training-jobs/{job_id}")
        for m in (job.get("metrics") or [])[seen:]:
            if as_json:
                sys.stdout.write(json.dumps(m) + "\n")
            else:
                console.print(_epoch_row(m))
        seen = len(job.get("metrics") or [])
        if job["status"] != status and not as_json:
            console.print(f"[bold]{job['status']}[/] ({job['progress']})")
        status = job["status"]
        if status in FINISHED:
            break
        time.sleep(interval)
    if as_json:
        sys.stdout.write(json.dumps(job) + "\n")
    else:
        if job.get("promotion_decision"):
            console.print(f"model version {job.get('model_version_id')}: {job['promotion_decision']}")
        if job.get("error"):
            err.print(f"[red]{job['error']}[/]")
    if status != "succeeded":
        raise typer.Exit(1)


@command(app, "watch")
def watch_job(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 2.0,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Follow a job, printing each epoch as it finishes; exits 0 when it succeeds, 1 otherwise."""
    _watch(Api(url, api_key), job_id, interval, as_json)


def register(root: typer.Typer) -> None:
    from binwatch.cli.cost import cost
    from binwatch.cli.reap import reap
    from binwatch.cli.worker import worker

    # reap works on the database and broker directly, like `worker`; it has its own module (and imports).
    command(app, "reap")(reap)
    command(app, "cost")(cost)
    root.add_typer(app, name="jobs", help="Submit, follow and cancel training jobs through the HTTP API.")
    command(root, "worker")(worker)
