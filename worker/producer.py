"""The Celery app a worker sends its own messages with (tuning trials, join messages of a training group):
one per broker URL and process, so each send reuses its connection pool instead of building an app."""

from __future__ import annotations

from typing import Any

from records.job_queue import make_celery
from settings import Settings

_producers: dict[str, Any] = {}


def producer(settings: Settings) -> Any:
    url = settings.resolved_broker_url
    if url not in _producers:
        _producers[url] = make_celery(settings, producer=True)
    return _producers[url]
