"""Helpers for tests/worker and tests/e2e: real `binwatch worker` processes, job submission, polling.

Every test gets its own Postgres database (pg_url) and its own Redis key prefix on the shared Redis, so
tests running side by side (or other engineers' suites) never see each other's queues.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from records import jobs
from records.db import make_engine, make_session_factory
from records.job_queue import enqueue_training, make_celery, time_limits
from records.job_spec import DatasetSpec, Hyperparameters, resolve_config
from records.orm import TrainingJob
from settings import Settings
from tests.api.support import BINWATCH, clean_env
from tests.conftest import ABID, REPO

T = TypeVar("T")

# Small and quick on a 2-core CPU: ResNet18 at 64 px, batch 16, real ABID photos.
TINY = {"recipe": "smoke", "image_size": 64, "batch_size": 16}


def worker_env(
    *,
    database_url: str | None,
    broker_url: str | None,
    home: Path,
    artifacts: Path | str | None = None,
    key_prefix: str = "",
    **overrides: str,
) -> dict[str, str]:
    """Environment for a worker (or API) process: short timeouts so faults resolve in seconds."""
    env = clean_env(
        BINWATCH_HOME=str(home),
        BINWATCH_DEVICE="cpu",
        BINWATCH_LOG_LEVEL="INFO",
        # Redelivery of a killed worker's message after 4 s, takeover of its job once silent for 3 s.
        BINWATCH_BROKER_VISIBILITY_TIMEOUT="4",
        BINWATCH_JOB_HEARTBEAT_SECONDS="0.5",
        BINWATCH_JOB_STALE_AFTER_SECONDS="3",
        BINWATCH_JOB_CANCEL_POLL_SECONDS="0.5",
        BINWATCH_MODEL_POLL_SECONDS="0.5",
        BINWATCH_BOOTSTRAP_ADMIN_KEY="false",
        # The machine has 2 cores shared with other suites; one thread per process keeps it responsive.
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    if database_url:
        env["BINWATCH_DATABASE_URL"] = database_url
    if broker_url:
        env["BINWATCH_BROKER_URL"] = broker_url
    if artifacts:
        env["BINWATCH_ARTIFACT_STORE"] = str(artifacts)
    if key_prefix:
        env["BINWATCH_BROKER_KEY_PREFIX"] = key_prefix
    env.update(overrides)
    return env


def settings_from_env(env: dict[str, str]) -> Settings:
    """The Settings a process started with ``env`` would read (for the test's own submissions)."""
    values = {k[len("BINWATCH_") :].lower(): v for k, v in env.items() if k.startswith("BINWATCH_")}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class WorkerProcess:
    """A real `binwatch worker` in its own process group (so SIGKILL takes its children too)."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            if " ready." in self.log():
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (a warm shutdown), then SIGKILL if it does not exit."""
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(timeout=10)
        else:
            self.proc.wait()
        # The process group may still hold a DataLoader child; take it down with the leader.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.proc.returncode


def start_worker(
    env: dict[str, str],
    log_dir: Path,
    name: str = "worker",
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> WorkerProcess:
    """``wrap``: turns the command into the one to run (e.g. inside a network namespace)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    argv = [str(BINWATCH), "worker"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            wrap(argv) if wrap else argv,
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches it and only it
        )
    return WorkerProcess(proc, log_path, env)


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy; fail saying ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Jobs:
    """The test's view of the job tables, and submission through the same code path as the API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.resolved_database_url)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        self.celery = make_celery(settings, producer=True)

    def close(self) -> None:
        self.engine.dispose()

    def submit(
        self,
        dataset: dict[str, Any] | None = None,
        policy: str = "never",
        enqueue: bool = True,
        nodes: int = 1,
        procs_per_node: int = 1,
        **hyper: Any,
    ) -> str:
        """create_job, commit, enqueue_training: what POST /v1/training-jobs does."""
        spec = DatasetSpec.model_validate(dataset or {"uri": str(ABID), "limit": 96})
        hp = Hyperparameters.model_validate({**TINY, **hyper})
        config = resolve_config(hp)
        soft, _ = time_limits(self.settings, hp.time_limit_seconds)
        task_id = uuid.uuid4().hex
        with self.sessions() as session:
            job = jobs.create_job(
                session,
                dataset=spec.stored(),
                params={
                    "hyperparameters": hp.model_dump(exclude_none=True),
                    "config": config,
                    "time_limit_seconds": soft,
                },
                promotion_policy=policy,
                epochs=int(config["epochs"]),
                celery_task_id=task_id,
                nodes=nodes,
                procs_per_node=procs_per_node,
            )
            session.commit()
            job_id = job.id
        if enqueue:
            enqueue_training(self.celery, self.settings, job_id, task_id, soft)
        return job_id

    def get(self, job_id: str) -> TrainingJob:
        with self.sessions() as session:
            job = jobs.get_job(session, job_id)
            assert job is not None
            return job

    def epochs(self, job_id: str) -> list[Any]:
        with self.sessions() as session:
            return jobs.epoch_metrics(session, job_id)

    def wait_status(self, job_id: str, statuses: tuple[str, ...], timeout: float) -> TrainingJob:
        return wait_for(
            lambda: job if (job := self.get(job_id)).status in statuses else None,
            timeout,
            f"job {job_id} to reach {statuses}",
            interval=0.1,
        )


def delete_redis_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
