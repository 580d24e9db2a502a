"""``python -m worker.healthcheck``: can this worker do work? Exit 0 if the broker and the database answer.

Used as the worker container's healthcheck. It does not ask the worker process itself (``celery inspect
ping``): with the solo pool a worker busy training does not answer remote-control pings until its job
ends, and would be reported unhealthy, and restarted, in the middle of every job.
"""

from __future__ import annotations

import sys

from records.db import DatabaseUnavailable, check_database, make_engine
from records.job_queue import QueueUnavailable, check_broker, make_celery
from settings import get_settings


def main() -> int:
    settings = get_settings()
    problems: list[str] = []
    try:
        check_broker(make_celery(settings, producer=True), timeout=settings.broker_connect_timeout)
    except QueueUnavailable as exc:
        problems.append(str(exc))
    engine = make_engine(settings.resolved_database_url)
    try:
        check_database(engine)
    except DatabaseUnavailable as exc:
        problems.append(str(exc))
    finally:
        engine.dispose()
    for problem in problems:
        sys.stderr.write(f"unhealthy: {problem}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
