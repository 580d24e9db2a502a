"""Fixtures for the API tests: real tiny checkpoints, and the app in-process on the embedded default.

In-process tests use FastAPI's TestClient with the full lifespan (migrations, model manager, batcher) on
a fresh SQLite file and artifact folder per test. Tests that need real HTTP, several processes, Postgres
or S3 start `binwatch serve` instead (tests.api.support.start_server).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app, prepare_database
from binwatch.cli.models import RegisteredModel, register_model
from records import apikeys
from records.db import make_engine, make_session_factory, session_scope
from settings import Settings
from tests.api.support import tiny_checkpoint


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two different real checkpoints (seeds 1 and 2), trained once per session."""
    root = tmp_path_factory.getbasetemp() / "tiny-checkpoints"
    return tiny_checkpoint(root, 1), tiny_checkpoint(root, 2)


@dataclass
class Service:
    client: TestClient
    settings: Settings
    admin_key: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"X-API-Key": key or self.admin_key}

    def create_key(self, *scopes: str, name: str = "test") -> str:
        engine = make_engine(self.settings.resolved_database_url)
        try:
            with session_scope(make_session_factory(engine)) as session:
                return apikeys.create_api_key(session, name, list(scopes)).secret
        finally:
            engine.dispose()

    def register(self, checkpoint: Path, promote: bool = True, name: str | None = None) -> RegisteredModel:
        return register_model(self.settings, checkpoint, promote=promote, name=name)

    def wait_serving(self, version_id: int, timeout: float = 60) -> None:
        """Until /readyz reports ``version_id`` (picked up by the manager's polling)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = self.client.get("/readyz")
            if ready.status_code == 200 and ready.json()["model"]["id"] == version_id:
                return
            time.sleep(0.1)
        raise AssertionError(f"model version {version_id} not served after {timeout}s: {ready.text}")


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start the app in-process on a fresh embedded database; keyword arguments override settings."""
    stack: list[TestClient] = []

    def make(**overrides: Any) -> Service:
        values: dict[str, Any] = {
            "home": tmp_path / f"home{len(stack)}",
            "model_poll_seconds": 0.2,
            "device": "cpu",
            "batch_max_wait_ms": 2.0,
        }
        values.update(overrides)
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        admin = prepare_database(settings, announce=False)
        assert admin is not None, "a fresh embedded database gets an admin key"
        client = TestClient(create_app(settings))
        client.__enter__()
        stack.append(client)
        return Service(client, settings, admin)

    try:
        yield make
    finally:
        for client in reversed(stack):
            client.__exit__(None, None, None)


@pytest.fixture
def service(make_service: Callable[..., Service], checkpoints: tuple[Path, Path]) -> Service:
    """The app with checkpoint seed 1 registered, promoted and loaded."""
    svc = make_service()
    registered = svc.register(checkpoints[0])
    svc.wait_serving(registered.id)
    return svc
