"""The EC2 instance metadata service (IMDSv2), at the address the operator configured
(``BINWATCH_INSTANCE_METADATA_URL``, unset by default: nothing is contacted then).

- **Instance type**: read once, for the cost of the jobs this worker runs when ``BINWATCH_INSTANCE_TYPE``
  is not set (records/costs.py).
- **Spot interruption notice**: EC2 publishes ``/latest/meta-data/spot/instance-action`` about two
  minutes before it reclaims a spot instance. ``SpotWatcher`` polls it and, when it appears, sends this
  worker SIGTERM: Celery's warm shutdown stops the running job at its next batch and hands it back to the
  queue, resumable after its last stored epoch (the path ``docker stop`` and the tests' SIGTERM take), and
  the worker takes no new job. Two minutes are enough: a batch takes seconds.

Only this address is ever contacted, and no credential is sent to it (IMDSv2 tokens are minted by it).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import urllib.error
import urllib.request
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from settings import Settings

log = logging.getLogger(__name__)

TOKEN_TTL_S = 300


class InstanceMetadata:
    def __init__(self, base_url: str, timeout: float = 2.0) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout

    def _token(self) -> str:
        request = urllib.request.Request(
            f"{self.base}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - operator's URL
            return response.read().decode()

    def get(self, path: str) -> str | None:
        """The text at ``/latest/meta-data/<path>``; None when it does not exist (404)."""
        request = urllib.request.Request(
            f"{self.base}/latest/meta-data/{path}", headers={"X-aws-ec2-metadata-token": self._token()}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.read().decode()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def instance_type(self) -> str | None:
        try:
            return self.get("instance-type")
        except (OSError, urllib.error.URLError):
            log.warning("instance metadata at %s: could not read the instance type", self.base, exc_info=True)
            return None


class SpotWatcher(threading.Thread):
    """Polls the spot interruption notice; on one, SIGTERM to this worker (see the module docstring)."""

    def __init__(self, metadata: InstanceMetadata, every_s: float) -> None:
        super().__init__(name="spot-watcher", daemon=True)
        self.metadata, self.every_s = metadata, every_s
        self.stopped = threading.Event()
        self.notice: str | None = None

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                notice = self.metadata.get("spot/instance-action")
            except (OSError, urllib.error.URLError) as exc:
                log.debug("spot watcher: metadata unreachable (%s)", exc)
                continue
            if notice:
                self.notice = notice
                log.warning(
                    "spot interruption notice (%s): handing the running job back and stopping", notice
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def stop(self) -> None:
        self.stopped.set()


_instance_type: dict[str, str | None] = {}


def instance_type(settings: Settings) -> str | None:
    """``BINWATCH_INSTANCE_TYPE``, else the metadata service's answer (read once per process), else None."""
    if settings.instance_type or not settings.instance_metadata_url:
        return settings.instance_type
    url = settings.instance_metadata_url
    if url not in _instance_type:
        _instance_type[url] = InstanceMetadata(url).instance_type()
    return _instance_type[url]


def install(app: Celery, settings: Settings) -> None:
    """Start a ``SpotWatcher`` in the worker's main process once it is ready, when the URL is set."""
    if not settings.instance_metadata_url:
        return
    state: dict[str, SpotWatcher] = {}

    def start(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is not app or "watcher" in state:
            return
        watcher = state["watcher"] = SpotWatcher(
            InstanceMetadata(str(settings.instance_metadata_url)), settings.spot_poll_seconds
        )
        watcher.start()
        log.info(
            "spot watcher: polling %s every %gs", settings.instance_metadata_url, settings.spot_poll_seconds
        )

    def stop(sender: Any = None, **_: Any) -> None:
        watcher = state.pop("watcher", None)
        if watcher is not None:
            watcher.stop()

    worker_ready.connect(start, weak=False)
    worker_shutdown.connect(stop, weak=False)
