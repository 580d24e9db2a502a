"""`binwatch serve` and `binwatch apikeys create|list|revoke`.

The apikeys commands work on the database directly (binwatch/cli/database.py), with no server running.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.table import Table

from binwatch.cli.database import Database, console, err, fail, load_settings
from binwatch.cli.models import install_bundled_if_empty
from records import apikeys as key_records
from records.db import safe_url, session_scope
from records.orm import SCOPES

apikeys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")


# -- serve -------------------------------------------------------------------------------------------

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's switch to aggregated (file) mode
# What prometheus_client writes there: <type>_<pid>.db, gauges as gauge_<multiprocess_mode>_<pid>.db.
_PROMETHEUS_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_\d+\.db")


def _prepare_metrics_dir(workers: int) -> tuple[Path | None, bool]:
    """Give uvicorn's workers one empty directory for prometheus_client's multiprocess mode, so that
    /metrics sums all of them (api/metrics.py). Returns the directory (None: per-process metrics) and
    whether serve created it, and so removes it on exit.

    Set in os.environ before uvicorn starts its workers, which are spawned (fresh interpreters, not forks):
    each imports prometheus_client only after it has the variable. An operator's PROMETHEUS_MULTIPROC_DIR
    is used as is (even with one worker; prometheus_client in this process already follows it), with
    prometheus_client's files from an earlier run deleted first, as its docs require: they would add old
    totals and old workers' gauges. Nothing else in it is touched. Without one and with several workers:
    a new private temporary directory (TMPDIR), not one under BINWATCH_HOME, which may be a volume shared
    by replicas or a network filesystem, where mmap is slow and another instance's files would be summed.
    """
    configured = os.environ.get(MULTIPROC_DIR_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.iterdir():
            if _PROMETHEUS_FILE.fullmatch(stale.name):
                stale.unlink(missing_ok=True)
        return path, False
    if workers <= 1:
        return None, False
    path = Path(tempfile.mkdtemp(prefix="binwatch-metrics-"))
    os.environ[MULTIPROC_DIR_ENV] = str(path)
    return path, True


def _die_with_parent() -> None:
    """In the child: get SIGTERM when `binwatch serve` ends, however it ends.

    uvicorn re-raises the SIGTERM it shut down on, so serve's own clean-up does not always run; the kernel's
    parent-death signal (Linux) still stops the worker, which then hands a running job back to the queue.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default BINWATCH_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default BINWATCH_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default BINWATCH_WORKERS).")] = None,
    with_worker: Annotated[
        bool,
        typer.Option(
            "--with-worker",
            help="Also run one training worker (`binwatch worker`) as a child process, stopped with the "
            "server: the whole service in one command (what `make run` does).",
        ),
    ] = False,
) -> None:
    """Run the HTTP API (uvicorn).

    Without BINWATCH_DATABASE_URL / BINWATCH_ARTIFACT_STORE everything lives under BINWATCH_HOME (./var):
    a SQLite file and an artifact folder, no other server needed. The database is migrated on start; on
    the first start of an embedded database an admin API key is created and printed once. The active
    model version (if any) is loaded in the background; /readyz says when it is ready.

    Example: binwatch serve --port 8000
    """
    import uvicorn

    from api.app import prepare_database
    from api.thread_budget import plan as plan_threads

    settings = load_settings()
    host = host or settings.host
    port = port if port is not None else settings.port
    workers = workers if workers is not None else settings.workers
    url = settings.resolved_database_url
    try:
        # Once, here, before any worker process exists: workers then find the schema and the key in place.
        prepare_database(settings.model_copy(update={"host": host, "port": port}))
    except sa.exc.OperationalError as exc:
        raise fail(f"database {safe_url(url)} is unreachable: {exc.orig or exc}") from exc
    if settings.should_install_bundled_model:
        install_bundled_if_empty(settings)
    err.print(
        f"binwatch API on http://{host}:{port} ({workers} worker{'s' if workers != 1 else ''}); "
        f"database {safe_url(url)}; artifacts {settings.resolved_artifact_store}; docs at /docs",
        soft_wrap=True,
    )
    # Each uvicorn worker plans its own threads from the settings: they must know how many siblings share
    # the cores, also when --workers overrides BINWATCH_WORKERS.
    os.environ["BINWATCH_WORKERS"] = str(workers)
    budget = plan_threads(settings.model_copy(update={"workers": workers}))
    err.print(
        f"threads: {budget.describe()} (BINWATCH_CPU_CORES, BINWATCH_TORCH_THREADS, BINWATCH_DECODE_THREADS)",
        soft_wrap=True,
    )
    training_worker = None
    if with_worker:
        # A separate process, as on a GPU host: training never runs inside the API's event loop.
        training_worker = subprocess.Popen(
            [sys.executable, "-m", "binwatch", "worker"], preexec_fn=_die_with_parent
        )
        broker = sa.engine.make_url(settings.resolved_broker_url).render_as_string(hide_password=True)
        err.print(f"training worker started (pid {training_worker.pid}); broker {broker}", soft_wrap=True)
    try:
        # After the training worker started: it does not inherit a directory that is only the API's.
        metrics_dir, own_metrics_dir = _prepare_metrics_dir(workers)
    except OSError as exc:
        raise fail(f"cannot prepare {MULTIPROC_DIR_ENV} for metrics: {exc}") from exc
    if metrics_dir is not None:
        err.print(f"metrics: /metrics sums all workers ({MULTIPROC_DIR_ENV}={metrics_dir})", soft_wrap=True)
    try:
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=30,
            # Unparsable requests answered as problem+json too (api/http_protocol.py).
            http="api.http_protocol:ProblemHttpToolsProtocol",
        )
    finally:
        if training_worker is not None:
            # SIGTERM: the worker hands a running job back to the queue, to be resumed on the next start.
            training_worker.terminate()
            try:
                training_worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                training_worker.kill()
        if own_metrics_dir and metrics_dir is not None:
            # uvicorn has joined its workers by now. (Left behind only if serve itself is killed: a few
            # small files under TMPDIR.)
            shutil.rmtree(metrics_dir, ignore_errors=True)


# -- apikeys -----------------------------------------------------------------------------------------


@apikeys_app.command("create")
def apikeys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key (shown in listings and promotions).")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help=f"Repeatable: {', '.join(SCOPES)}. admin implies all.")
    ],
) -> None:
    """Create an API key and print it (stdout, once; only its hash is stored).

    Example: binwatch apikeys create --name scanner-3 --scope predict --scope inventory
    """
    settings = load_settings()
    with Database(settings) as factory, session_scope(factory) as session:
        try:
            created = key_records.create_api_key(session, name, scope)
        except ValueError as exc:
            raise fail(str(exc)) from exc
        key_id, scopes = created.record.id, created.record.scopes
    err.print(f"created API key {key_id} ({name}, scopes: {', '.join(scopes)}); it is not shown again:")
    typer.echo(created.secret)


@apikeys_app.command("list")
def apikeys_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line instead of a table.")
    ] = False,
) -> None:
    """List API keys (id, prefix, scopes; never the keys themselves)."""
    settings = load_settings()
    table = Table(title="API keys")
    for col in ("id", "name", "prefix", "scopes", "created", "last used", "revoked"):
        table.add_column(col)
    with Database(settings) as factory, session_scope(factory) as session:
        for key in key_records.list_api_keys(session, include_revoked=all_):
            if as_json:
                typer.echo(
                    json.dumps(
                        {
                            "id": key.id,
                            "name": key.name,
                            "prefix": key.prefix,
                            "scopes": key.scopes,
                            "created_at": key.created_at.isoformat(),
                            "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
                            "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
                        }
                    )
                )
                continue
            table.add_row(
                str(key.id),
                key.name,
                key.prefix + "…",
                ", ".join(key.scopes),
                f"{key.created_at:%Y-%m-%d %H:%M}",
                f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "-",
                f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "-",
            )
    if not as_json:
        console.print(table)


@apikeys_app.command("revoke")
def apikeys_revoke(
    key: Annotated[
        str, typer.Argument(help="The key's id or prefix (bw_XXXXXXXX), as `apikeys list` shows.")
    ],
) -> None:
    """Revoke an API key; requests with it get 401 from then on."""
    settings = load_settings()
    with Database(settings) as factory, session_scope(factory) as session:
        try:
            record = key_records.revoke_api_key(session, key.rstrip("…"))
        except key_records.ApiKeyNotFound as exc:
            raise fail(str(exc)) from exc
        console.print(f"revoked API key {record.id} ({record.name}, {record.prefix}…)")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.add_typer(apikeys_app, name="apikeys")
