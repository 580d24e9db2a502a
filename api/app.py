"""The FastAPI application: ``create_app()`` builds it; uvicorn runs it (``binwatch serve``).

Startup (the lifespan): migrate the database, create and print the first admin key on the embedded
default, open the artifact store, start the inference batcher, load the active model (if there is one)
before accepting connections, then keep polling for promotions. ``/readyz`` answers 200 once a model is
loaded.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from PIL import Image
from starlette.concurrency import run_in_threadpool

from api import console, reference_pages, thread_budget
from api.auth_gate import AuthGateMiddleware
from api.batcher import Batcher
from api.body_limit import BodyLimitMiddleware
from api.deps import AppState
from api.fair_decode import FairDecoder
from api.key_cache import KeyCache
from api.metrics import Metrics, MetricsMiddleware
from api.model_manager import ModelManager
from api.openapi import install_openapi
from api.problems import install_problem_handlers
from api.routes import bins, checks, health, models, predictions, reviews, training_jobs, tuning_jobs
from api.security_headers import SecurityHeadersMiddleware
from records import apikeys
from records.artifacts import open_artifact_store
from records.db import make_engine, make_session_factory, safe_url, session_scope
from records.migrate import upgrade_database
from settings import Settings

log = logging.getLogger("binwatch.api")

DESCRIPTION = """
Counts the objects in bin photos with a ResNet and flags bins whose recorded count the photo contradicts.

**Authentication**: every `/v1` endpoint needs an API key, sent as `X-API-Key: <key>` or
`Authorization: Bearer <key>`. Keys have scopes: `predict` (POST /v1/predictions), `inventory` (bins and
checks), `train` (training jobs), `admin` (everything, including promoting models). Create keys with
`binwatch apikeys create`.

**Errors** are RFC 9457 problem details (`application/problem+json`) with `type`, `title`, `status`,
`detail`; see docs/api.md for the problem types.
"""

TAGS = [
    {"name": "predictions", "description": "Count objects in photos."},
    {"name": "bins", "description": "Recorded counts, photo checks and their verdicts."},
    {"name": "models", "description": "The model registry and promotion."},
    {"name": "training jobs", "description": "Train new model versions on a worker."},
    {
        "name": "tuning jobs",
        "description": "Search hyperparameters: trials run as training jobs on the workers.",
    },
    {"name": "health", "description": "Probes and metrics."},
]

# Slightly more than one upload's limit is drained before a 413, so clients that write their whole body
# before reading (most HTTP/1.1 clients) see the 413 rather than a reset connection.
DRAIN_FACTOR = 4


def prepare_database(settings: Settings, announce: bool = True) -> str | None:
    """Migrate (if enabled) and create the first admin key (if enabled and none exists).

    Returns the new key's secret when one was created; with ``announce`` it is printed to stderr,
    the only time it is ever shown. ``binwatch serve`` calls this once before starting worker
    processes, so several workers never race to create the first key.
    """
    url = settings.resolved_database_url
    if settings.auto_migrate:
        upgrade_database(url)
    if not settings.should_bootstrap_admin_key:
        return None
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            created = apikeys.bootstrap_admin_key(session)
            secret = created.secret if created else None
    finally:
        engine.dispose()
    if secret and announce:
        announce_admin_key(secret, settings)
    return secret


def announce_admin_key(secret: str, settings: Settings) -> None:
    base = f"http://{settings.host}:{settings.port}"
    sys.stderr.write(
        "\n"
        "binwatch: created the first API key, with the admin scope. It is shown only this once; keep it:\n"
        f"\n    {secret}\n\n"
        f"  try:  curl -H 'X-API-Key: {secret}' {base}/v1/models\n"
        "  more keys: binwatch apikeys create --name NAME --scope predict\n\n"
    )
    sys.stderr.flush()


def _configure_logging(settings: Settings) -> None:
    logger = logging.getLogger("binwatch")
    logger.setLevel(settings.log_level.upper())
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def _raise_pillow_limit(settings: Settings) -> None:
    # Pillow refuses images over 2 x Image.MAX_IMAGE_PIXELS (about 179 M pixels) on its own. Our limit
    # (max_image_pixels, checked from the header) is the one that should decide, so when it is set
    # higher than Pillow's, Pillow's is raised to match. Process-wide, like the setting itself.
    if Image.MAX_IMAGE_PIXELS is not None and settings.max_image_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = settings.max_image_pixels


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: read from the environment, BINWATCH_*)."""
    settings = settings or Settings()
    _configure_logging(settings)
    _raise_pillow_limit(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.resolved_database_url
        log.info("database %s, artifacts %s", safe_url(url), settings.resolved_artifact_store)
        await run_in_threadpool(prepare_database, settings)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        artifacts = open_artifact_store(
            settings.resolved_artifact_store, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
        )
        budget = thread_budget.plan(settings)
        thread_budget.apply(budget)
        manager = ModelManager(settings, factory, artifacts, metrics, threads=budget.torch_threads)
        batcher = Batcher(
            max_size=settings.batch_max_size,
            max_wait_s=settings.batch_max_wait_ms / 1000.0,
            queue_size=settings.batch_queue_size,
            metrics=metrics,
            torch_threads=budget.torch_threads,
        )
        for kind, value in (
            ("torch", budget.torch_threads),
            ("decode", budget.decode_threads),
            ("cores", budget.cores),
            ("workers", budget.workers),
        ):
            metrics.threads.labels(kind).set(value)
        decode_pool = FairDecoder(budget.decode_threads, settings.decode_backlog_per_key)
        app.state.binwatch = AppState(
            settings,
            engine,
            factory,
            artifacts,
            manager,
            batcher,
            metrics,
            budget,
            decode_pool,
            KeyCache(settings.api_key_cache_seconds),
        )
        batcher.start()
        # Load the active model before this process accepts connections: uvicorn workers share one
        # listening socket, so a worker still loading would otherwise take requests and answer 503
        # while its siblings are ready. A model that fails to load does not stop startup (503s say why).
        try:
            await run_in_threadpool(manager.refresh)
        except Exception:  # noqa: BLE001 - the poll loop retries; /readyz reports the state
            log.exception("loading the active model at startup failed; will retry")
        manager.start()
        try:
            yield
        finally:
            manager.stop()
            await run_in_threadpool(batcher.stop)
            decode_pool.shutdown(wait=False, cancel_futures=True)
            engine.dispose()

    app = FastAPI(
        title="binwatch",
        version="1.0.0",
        summary="Inventory monitoring: count objects in bin photos, flag recorded counts that disagree.",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        # Served by api/reference_pages.py from this deployment's own files, never from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    install_problem_handlers(app)
    install_openapi(app)
    reference_pages.install(app)
    app.include_router(health.router)
    app.include_router(predictions.router)
    app.include_router(bins.router)
    app.include_router(checks.router)
    app.include_router(reviews.router)
    app.include_router(models.router)
    # Training-job paths are relative to /v1 (e.g. "/training-jobs" -> /v1/training-jobs).
    app.include_router(training_jobs.router, prefix="/v1")
    app.include_router(tuning_jobs.router, prefix="/v1")
    # The operator's console at / (api/console/, docs/console.md).
    console.install(app)
    # Added last = outermost: metrics see every response, including the body limit's 413s.
    app.add_middleware(
        BodyLimitMiddleware,
        upload_bytes=settings.max_upload_bytes,
        json_bytes=settings.max_json_bytes,
        drain_bytes=DRAIN_FACTOR * max(settings.max_upload_bytes, settings.max_json_bytes),
    )
    # Outside the body limit: an anonymous request is refused before its size or body matter.
    app.add_middleware(AuthGateMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI document, without starting anything (for docs and tests)."""
    return create_app(Settings()).openapi()
