"""Fixtures for the worker tests: a migrated Postgres database, a private Redis key prefix, workers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from records.migrate import upgrade_database
from settings import Settings
from tests.worker.support import (
    Jobs,
    WorkerProcess,
    delete_redis_prefix,
    settings_from_env,
    start_worker,
    worker_env,
)


@dataclass
class Stack:
    """One test's deployment: database, broker prefix, artifact folder, and the workers it started."""

    env: dict[str, str]
    settings: Settings
    jobs: Jobs
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def worker(self, name: str = "worker", **overrides: str) -> WorkerProcess:
        proc = start_worker(dict(self.env, **overrides), self.tmp / "logs", name)
        self.workers.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log()}" for w in self.workers)


@pytest.fixture
def stack(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    upgrade_database(pg_url)
    prefix = f"bwtest-{uuid.uuid4().hex[:10]}:"
    env = worker_env(
        database_url=pg_url,
        broker_url=f"{redis_url}/0",
        home=tmp_path / "home",
        artifacts=tmp_path / "artifacts",
        key_prefix=prefix,
    )
    settings = settings_from_env(env)
    jobs = Jobs(settings)
    stack = Stack(env, settings, jobs, tmp_path)
    try:
        yield stack
    finally:
        for proc in stack.workers:
            proc.stop(timeout=15)
        jobs.close()
        delete_redis_prefix(redis_url, prefix)
