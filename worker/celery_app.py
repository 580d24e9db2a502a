"""The worker's Celery app: ``celery -A worker.celery_app worker`` and ``binwatch worker`` both use it.

The configuration comes from records.job_queue (shared with the API, which only sends); this module adds
the task implementation, which needs the ML core the API never imports, and the stale-job reaper that
runs in every worker (worker/reaper.py).
"""

from __future__ import annotations

from records.job_queue import make_celery
from settings import get_settings
from worker import instance_metadata, reaper
from worker.tasks import register_tasks

app = make_celery(get_settings())
register_tasks(app)
reaper.install(app, get_settings())
instance_metadata.install(app, get_settings())
