"""The Celery side that the API and the worker share: one app configuration, the task's name, enqueueing.

The API never imports ``worker`` (and so never imports the training code) and the worker never imports
``api``; both build their Celery app here, so the broker URL, the routing and the delivery guarantees
cannot drift apart. Only names cross the boundary: the API sends ``TRAIN_TASK`` with a job id, and the
worker registers a task under that name.

Delivery guarantees (why each setting is what it is):

- ``task_acks_late``: the message is acknowledged when the task *finishes*, so a worker that dies
  mid-job (SIGKILL, spot interruption, OOM) leaves it unacknowledged and the broker hands it out again.
  The task resumes from the last stored epoch (worker/runner.py), so a redelivery costs one epoch.
- ``task_reject_on_worker_lost``: with the prefork pool, a child killed mid-task is requeued at once
  instead of being marked failed. With the solo pool (or when the worker's main process is killed) it
  does not apply: the Redis transport redelivers after ``visibility_timeout`` instead.
- ``visibility_timeout`` longer than the longest job: Redis redelivers any message unacknowledged for
  that long, *even if its worker is alive*, so a shorter value hands a running job to a second worker.
  The worker still guards against that (a job has one live owner, see records/jobs.py claim_job).
- ``worker_prefetch_multiplier=1``: a worker reserves one job at a time; a long job never holds a
  second one hostage while other workers sit idle.
- No result backend: a job's state lives in the database (training_jobs), which the API reads.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu.exceptions import KombuError, OperationalError
from sqlalchemy.engine import make_url

from settings import Settings

log = logging.getLogger(__name__)

#: The one task name the API sends and the worker registers.
TRAIN_TASK = "binwatch.train"
#: Sent by the worker that leads a multi-node job, once per other node (records/job_groups.py).
JOIN_TASK = "binwatch.join"
#: GPU hosts consume this queue (``binwatch worker`` listens to BINWATCH_WORKER_QUEUES, default it).
TRAINING_QUEUE = "training"


class QueueUnavailable(RuntimeError):
    """The broker could not be reached (or refused the message), so nothing was queued."""


def redact_broker_url(url: str) -> str:
    """The broker URL without its password, for messages users and logs see."""
    if url.startswith(("sqla+", "sqlalchemy+")):
        prefix, _, rest = url.partition("+")
        try:
            return f"{prefix}+{make_url(rest).render_as_string(hide_password=True)}"
        except Exception:  # noqa: BLE001 - a URL we cannot parse is shown without its credentials part
            return f"{prefix}+…"
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


def transport_options(settings: Settings, producer: bool = False) -> dict[str, Any]:
    url = settings.resolved_broker_url
    if not url.startswith(("redis://", "rediss://")):
        # The SQLAlchemy transport (embedded default) has no visibility timeout: an unacknowledged message
        # stays invisible until the worker that took it restores it on shutdown. Fine on one laptop.
        return {}
    vt = settings.resolved_visibility_timeout
    options: dict[str, Any] = {
        "visibility_timeout": vt,
        # Connecting to a dead or unroutable host must fail in seconds: the API answers 503 meanwhile.
        "socket_connect_timeout": settings.broker_connect_timeout,
        # How often a consuming worker looks for messages whose worker died (older than the visibility
        # timeout). kombu's default period is 10 s x 10 calls; with a short visibility timeout (tests,
        # small deployments) that would dominate the time to recover, and one ZRANGE per 10 s is cheap.
        "unacked_restore_interval": max(1, min(10, vt // 4)),
        "unacked_restore_throttle": 1,
    }
    if settings.broker_key_prefix:
        options["global_keyprefix"] = settings.broker_key_prefix
    if producer:
        # kombu retries a failed connect at 2 s, 4 s, … within the connect timeout; a submission should
        # fail at once instead (connection refused), or after socket_connect_timeout (unroutable host).
        options["max_retries"] = 0
    return options


def celery_config(settings: Settings, producer: bool = False) -> dict[str, Any]:
    """The Celery configuration both sides use (see the module docstring for why).

    ``producer``: the API's variant, which never retries a broker connection (it answers 503 instead).
    """
    return {
        "broker_url": settings.resolved_broker_url,
        "broker_transport_options": transport_options(settings, producer),
        "broker_connection_timeout": settings.broker_connect_timeout,
        # Workers wait for the broker at startup (compose starts them together); the API does not retry.
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_routes": {TRAIN_TASK: {"queue": TRAINING_QUEUE}, JOIN_TASK: {"queue": TRAINING_QUEUE}},
        "task_default_queue": TRAINING_QUEUE,
        "task_time_limit": settings.job_time_limit_seconds + settings.job_time_limit_grace_seconds,
        "task_soft_time_limit": settings.job_time_limit_seconds,
        # A fresh child per job under prefork: CUDA is initialised in the child, never in the parent that
        # forks, and GPU memory fragmentation does not accumulate across jobs.
        "worker_max_tasks_per_child": 1,
        "worker_concurrency": settings.worker_concurrency,
        "worker_pool": settings.worker_pool,
        # Losing the broker connection for a moment must not kill a six-hour job: the job's state is in
        # the database and its redelivered duplicate (if any) finds it finished and does nothing.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "timezone": "UTC",
        "enable_utc": True,
    }


def make_celery(settings: Settings, producer: bool = False, main: str = "binwatch") -> Celery:
    """A Celery app configured for ``settings``: ``producer=True`` for the API, False for the worker."""
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings, producer))
    return app


def time_limits(settings: Settings, soft_seconds: int | None) -> tuple[int, int]:
    """(soft, hard) limits for one job: its own soft limit, capped by the deployment's, plus the grace."""
    soft = min(soft_seconds or settings.job_time_limit_seconds, settings.job_time_limit_seconds)
    return soft, soft + settings.job_time_limit_grace_seconds


def enqueue_training(
    app: Celery, settings: Settings, job_id: str, task_id: str, soft_time_limit: int | None = None
) -> None:
    """Queue the training task for ``job_id``; raises ``QueueUnavailable`` if the broker is unreachable.

    The caller writes the job row first (the worker must always find it) and, when this raises, marks
    the row as not queued. No retries: the client gets a 503 within ``broker_connect_timeout`` seconds
    instead of a request that hangs while Redis is down.
    """
    soft, hard = time_limits(settings, soft_time_limit)
    try:
        app.send_task(
            TRAIN_TASK,
            args=[job_id],
            task_id=task_id,
            queue=TRAINING_QUEUE,
            soft_time_limit=soft,
            time_limit=hard,
            retry=False,
        )
    except (OperationalError, KombuError, OSError, TimeoutError) as exc:
        raise QueueUnavailable(
            f"the job queue at {redact_broker_url(settings.resolved_broker_url)} is unreachable ({exc}); "
            "the job was not queued"
        ) from exc
    except Exception as exc:
        # redis-py raises its own ConnectionError/TimeoutError classes, which kombu does not always wrap.
        if _is_connection_error(exc):
            raise QueueUnavailable(
                f"the job queue at {redact_broker_url(settings.resolved_broker_url)} is unreachable ({exc}); "
                "the job was not queued"
            ) from exc
        raise


def enqueue_join(
    app: Celery, settings: Settings, job_id: str, group_id: str, node_rank: int, soft_time_limit: int | None
) -> None:
    """Queue the message that seats a worker as node ``node_rank`` of the job's group ``group_id``.

    Raises ``QueueUnavailable`` like ``enqueue_training``.
    """
    soft, hard = time_limits(settings, soft_time_limit)
    try:
        app.send_task(
            JOIN_TASK,
            args=[job_id, group_id, node_rank],
            task_id=f"{group_id}-{node_rank}",
            queue=TRAINING_QUEUE,
            soft_time_limit=soft,
            time_limit=hard,
            retry=False,
        )
    except Exception as exc:
        lost = isinstance(exc, OperationalError | KombuError | OSError | TimeoutError)
        if lost or _is_connection_error(exc):
            raise QueueUnavailable(
                f"the job queue at {redact_broker_url(settings.resolved_broker_url)} is unreachable ({exc})"
            ) from exc
        raise


def _is_connection_error(exc: BaseException) -> bool:
    try:
        import redis.exceptions
    except ImportError:  # pragma: no cover - redis is a dependency
        return False
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)


def check_broker(app: Celery, timeout: float = 2.0) -> None:
    """Raise ``QueueUnavailable`` unless the broker accepts a connection (for readiness probes)."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; the message says which
        raise QueueUnavailable(f"the job queue is unreachable: {exc}") from exc
