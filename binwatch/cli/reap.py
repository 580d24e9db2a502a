"""`binwatch jobs reap`: one pass of the stale-job reaper that every worker runs (worker/reaper.py).

Unlike the other `jobs` commands it works on the database and the broker directly (the settings'
BINWATCH_DATABASE_URL and BINWATCH_BROKER_URL), like `binwatch worker`: it is for operators on a host of
the deployment, e.g. when no worker is running to reap, or to see at once what a pass would do.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from binwatch.cli.database import Database, console, load_settings
from settings import Settings


def _emit(row: dict[str, Any], line: str, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(row) + "\n")
    else:
        console.print(line)


def _dry_run(sessions: Any, settings: Settings, as_json: bool) -> int:
    from records import jobs

    with sessions() as session:
        stale = jobs.stale_jobs(session, settings.job_stale_after_seconds)
    for job in stale:
        row = {"job_id": job.id, "host": job.host, "attempts": job.attempts, "action": "none", "detail": ""}
        last = job.heartbeat_at.isoformat(timespec="seconds") if job.heartbeat_at else "never"
        _emit(row, f"job {job.id}: last heartbeat {last} from {job.host} ({job.attempts} attempts)", as_json)
    return len(stale)


def _reap(sessions: Any, settings: Settings, as_json: bool) -> bool:
    """One pass; False when some job could not be queued again."""
    from records import jobs
    from records.job_queue import make_celery
    from worker.reaper import describe, reap_once

    celery = make_celery(settings, producer=True)
    try:
        done = reap_once(sessions, settings, celery)
    finally:
        celery.close()
    for reaped in done:
        row = {
            "job_id": reaped.job_id,
            "host": reaped.host,
            "attempts": reaped.attempts,
            "action": str(reaped.action),
            "detail": reaped.detail,
        }
        _emit(row, describe(reaped, settings), as_json)
    if not done and not as_json:
        console.print(f"no running job has been silent for over {settings.job_stale_after_seconds:g} s")
    return not any(r.action == jobs.ReapAction.ERROR for r in done)


def reap(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list the stale running jobs; change nothing.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per job instead of lines.")
    ] = False,
) -> None:
    """Queue again the running jobs whose worker died, or fail them once out of attempts; print each.

    A running job whose heartbeat is older than BINWATCH_JOB_STALE_AFTER_SECONDS lost its worker. It goes
    back to queued and its task is sent again (it resumes from its last stored epoch), unless its workers
    died BINWATCH_JOB_MAX_ATTEMPTS times already: then it fails, naming the hosts. Every worker does this
    on its own every BINWATCH_JOB_REAPER_INTERVAL_SECONDS. Exits 1 if a job could not be queued again.

        binwatch jobs reap --dry-run
    """
    settings = load_settings()
    with Database(settings) as sessions:
        if dry_run:
            if not _dry_run(sessions, settings, as_json) and not as_json:
                console.print(
                    f"no running job has been silent for over {settings.job_stale_after_seconds:g} s"
                )
            return
        ok = _reap(sessions, settings, as_json)
    if not ok:
        raise typer.Exit(1)
