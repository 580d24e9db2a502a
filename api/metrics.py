"""Prometheus metrics: HTTP traffic, predictions, inference batches, the active model.

Two modes, picked once per process by prometheus_client when it is imported:

- **Per process** (the default, and ``binwatch serve`` with one worker): each app instance owns a
  ``CollectorRegistry`` (tests build many apps in one process) and /metrics renders it.
- **Aggregated** (``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is imported: ``binwatch serve``
  sets it for its uvicorn workers when ``BINWATCH_WORKERS`` > 1): every worker writes its values to
  memory-mapped files in that directory and /metrics, whichever worker answers it, renders the sum over all
  of them (``MultiProcessCollector``). Counters and histograms of workers that have exited still count, so
  totals never go backwards when uvicorn replaces a worker; gauges only count live workers (see the
  ``multiprocess_mode`` of each). In this mode one ``Metrics`` per process is assumed: two instances in one
  process would write the same file entries.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("binwatch.api")

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Unmatched paths share one label value, so scanners probing random URLs cannot blow up cardinality.
UNMATCHED_ROUTE = "<unmatched>"
# prometheus_client names the file of a "live*" gauge gauge_<mode>_<pid>.db.
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def multiprocess_dir() -> str | None:
    """The shared directory when this process's metric values live there (aggregated mode), else None."""
    path = os.environ.get(MULTIPROC_DIR_ENV)
    if not path:
        return None
    # prometheus_client chooses file-backed values once, when it is imported. A variable set later would
    # make /metrics read a directory this process never writes to; keep the per-process registry then.
    if not getattr(values.ValueClass, "_multiprocess", False):
        log.warning(
            "%s is set but prometheus_client was imported before it was: metrics stay per process",
            MULTIPROC_DIR_ENV,
        )
        return None
    return path


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def forget_dead_processes(path: str) -> None:
    """Drop the live-gauge files of processes that no longer exist.

    uvicorn's supervisor replaces a crashed or hung worker without telling anyone, and a killed worker runs
    no clean-up, so its last queue depth would otherwise be summed forever. Checked at each scrape: a
    handful of files, one ``kill(pid, 0)`` each. Counter and histogram files stay (their totals must not
    go backwards).
    """
    for file in Path(path).glob("gauge_live*_*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(file.name)
        if match is None or _is_alive(int(match[1])):
            continue
        try:
            mark_process_dead(int(match[1]), path)
        except FileNotFoundError:  # another worker's scrape removed it first
            pass


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "binwatch_http_requests",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "binwatch_http_request_duration_seconds",
            "HTTP request latency by route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "binwatch_predictions", "Images counted, by predicted label.", ["label"], registry=self.registry
        )
        self.checks = Counter(
            "binwatch_bin_checks", "Bin checks stored, by verdict.", ["verdict"], registry=self.registry
        )
        self.batch_size = Histogram(
            "binwatch_inference_batch_size",
            "Images per inference batch.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "binwatch_inference_seconds",
            "Wall time of one inference batch (forward pass and softmax).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Aggregated: each worker has its own queue, so the service's backlog is the sum over the workers
        # alive now (a dead worker's queue died with it).
        self.queue_depth = Gauge(
            "binwatch_inference_queue_depth",
            "Images waiting for an inference batch.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        # Aggregated: every worker runs with the same budget, so the largest value among live workers is
        # what each one uses ("livemax"; no pid label).
        self.threads = Gauge(
            "binwatch_threads",
            "The thread budget of each API worker (api/thread_budget.py): torch, decode, cores, workers.",
            ["kind"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.model_loads = Counter(
            "binwatch_model_loads",
            "Model loads by outcome (ok, failed).",
            ["outcome"],
            registry=self.registry,
        )
        # Aggregated: 1 for every version some live worker serves, 0 for one they all moved off (see
        # set_active_model), with the same labels as per process, so queries need no pid. During a swap
        # two versions read 1, which is true. "livemax" rather than "max": a dead worker's version must not
        # read 1 forever; rather than "liveall": no pid label, so no new series each time a worker restarts.
        self.active_model = Gauge(
            "binwatch_active_model_info",
            "1 for the model version this process serves.",
            ["version", "name", "sha256"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self._active_labels: tuple[str, str, str] | None = None
        self.multiprocess_dir = multiprocess_dir()

    def set_active_model(self, version: int | None, name: str = "", sha256: str = "") -> None:
        labels = (str(version), name, sha256[:12]) if version is not None else None
        if self.multiprocess_dir is None:
            self.active_model.clear()
        elif self._active_labels is not None and self._active_labels != labels:
            # clear() would only forget the series in this process: its file would keep the old version at
            # 1 for every scrape. Zero it instead.
            self.active_model.labels(*self._active_labels).set(0)
        if labels is not None:
            self.active_model.labels(*labels).set(1)
        self._active_labels = labels

    def render(self) -> bytes:
        """The Prometheus text exposition: this app's registry, or the sum over all worker processes."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        forget_dead_processes(self.multiprocess_dir)
        # A fresh registry per scrape, as prometheus_client's multiprocess docs prescribe: the collector
        # reads the files at collect time, and our own registry would report this process only.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)

    def process_exiting(self) -> None:
        """This worker is shutting down cleanly: its gauges stop counting now (crashes: see
        forget_dead_processes)."""
        if self.multiprocess_dir is not None:
            try:
                mark_process_dead(os.getpid(), self.multiprocess_dir)
            except FileNotFoundError:
                pass


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (``/v1/bins/{bin_id}``), not raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._watch_shutdown(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app dies before answering, the server answers 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            labels = (scope["method"], template, str(status))
            self.metrics.http_requests.labels(*labels).inc()
            self.metrics.http_latency.labels(*labels).observe(time.perf_counter() - start)

    def _watch_shutdown(self, send: Send) -> Send:
        # The app's own shutdown (batcher, model poller) has finished when it reports completion: nothing
        # sets a gauge after that, so this worker can leave the aggregate.
        async def send_watching(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                self.metrics.process_exiting()
            await send(message)

        return send_watching
