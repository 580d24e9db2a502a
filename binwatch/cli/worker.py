"""`binwatch worker`: a Celery worker consuming the training queue (worker/), started from the settings."""

from __future__ import annotations

from typing import Annotated

import typer

from binwatch.cli.api_client import err


def worker(
    queues: Annotated[
        str | None, typer.Option(help="Comma-separated queues [default: BINWATCH_WORKER_QUEUES].")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Jobs at once [default: BINWATCH_WORKER_CONCURRENCY].")
    ] = None,
    pool: Annotated[
        str | None, typer.Option(help="solo, prefork or threads [default: BINWATCH_WORKER_POOL].")
    ] = None,
    hostname: Annotated[str | None, typer.Option(help="Celery node name [default: binwatch@<host>].")] = None,
    loglevel: Annotated[str | None, typer.Option(help="Log level [default: BINWATCH_LOG_LEVEL].")] = None,
) -> None:
    """Run a training worker: a Celery worker consuming the training queue from the configured broker.

    Uses the same settings as the API (BINWATCH_DATABASE_URL, BINWATCH_BROKER_URL, BINWATCH_ARTIFACT_STORE).
    On GPU hosts run one worker per GPU with the solo pool (the default), see docs/deployment.md:

        CUDA_VISIBLE_DEVICES=0 binwatch worker
    """
    from settings import get_settings

    settings = get_settings()
    if (pool or settings.worker_pool) != "solo":
        err.print(
            "[yellow]warning:[/] the solo pool is the one meant for training (docs/deployment.md): prefork "
            "children cannot start DataLoader workers, so images load in-process there"
        )
    if settings.auto_migrate:
        # The worker may start before the API on a fresh database; alembic serialises concurrent upgrades.
        from records.migrate import upgrade_database

        upgrade_database(settings.resolved_database_url)
    from worker.celery_app import app as celery_app

    argv = [
        "worker",
        f"--queues={queues or settings.worker_queues}",
        f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--pool={pool or settings.worker_pool}",
        f"--hostname={hostname or 'binwatch@%h'}",
        f"--loglevel={loglevel or settings.log_level}",
        # Gossip, mingle and event heartbeats serve monitoring tools this deployment does not run; they only
        # add broker traffic (and startup delay) per worker.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    celery_app.worker_main(argv)
