"""Prometheus metrics: HTTP traffic, predictions, inference batches, the active model.

Each app instance owns a ``CollectorRegistry`` (tests build many apps in one process). Metrics are per
process: with ``BINWATCH_WORKERS`` > 1 each scrape of /metrics reaches one worker, so scrape every worker
(or run one worker per container) — prometheus_client's multiprocess mode is not used.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Unmatched paths share one label value, so scanners probing random URLs cannot blow up cardinality.
UNMATCHED_ROUTE = "<unmatched>"


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
        self.queue_depth = Gauge(
            "binwatch_inference_queue_depth", "Images waiting for an inference batch.", registry=self.registry
        )
        self.model_loads = Counter(
            "binwatch_model_loads",
            "Model loads by outcome (ok, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.active_model = Gauge(
            "binwatch_active_model_info",
            "1 for the model version this process serves.",
            ["version", "name", "sha256"],
            registry=self.registry,
        )

    def set_active_model(self, version: int | None, name: str = "", sha256: str = "") -> None:
        self.active_model.clear()
        if version is not None:
            self.active_model.labels(str(version), name, sha256[:12]).set(1)


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (``/v1/bins/{bin_id}``), not raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
