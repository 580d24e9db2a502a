"""The Celery side shared by API and worker: delivery guarantees, routing, and failing fast without Redis."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from records.job_queue import (
    TRAIN_TASK,
    TRAINING_QUEUE,
    QueueUnavailable,
    celery_config,
    enqueue_training,
    make_celery,
    redact_broker_url,
    time_limits,
)
from settings import Settings
from tests.conftest import REPO, free_port, wait_for_port
from tests.worker.support import delete_redis_prefix

REDIS_SERVER = "/usr/bin/redis-server"


def test_delivery_guarantees_are_configured() -> None:
    settings = Settings(_env_file=None, broker_url="redis://redis:6379/0")
    conf = celery_config(settings)
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_routes"][TRAIN_TASK] == {"queue": TRAINING_QUEUE}
    assert conf["result_backend"] is None and conf["task_ignore_result"] is True
    options = conf["broker_transport_options"]
    # Redelivery must not hand a running job to a second worker: longer than the longest job (hard limit).
    hard = settings.job_time_limit_seconds + settings.job_time_limit_grace_seconds
    assert options["visibility_timeout"] > hard
    assert options["socket_connect_timeout"] == settings.broker_connect_timeout
    assert "max_retries" not in options  # workers keep reconnecting
    assert celery_config(settings, producer=True)["broker_transport_options"]["max_retries"] == 0


def test_visibility_timeout_and_prefix_come_from_settings() -> None:
    settings = Settings(
        _env_file=None, broker_url="redis://r/0", broker_visibility_timeout=5, broker_key_prefix="site-a:"
    )
    options = celery_config(settings)["broker_transport_options"]
    assert options["visibility_timeout"] == 5
    assert options["global_keyprefix"] == "site-a:"
    assert options["unacked_restore_interval"] == 1  # a short timeout is also checked often


def test_embedded_default_uses_a_serverless_broker(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, home=tmp_path)
    conf = celery_config(settings)
    assert conf["broker_url"] == f"sqla+sqlite:///{(tmp_path / 'broker.db').resolve()}"
    assert conf["broker_transport_options"] == {}


def test_time_limits_are_capped_by_the_deployment() -> None:
    settings = Settings(_env_file=None, job_time_limit_seconds=3600, job_time_limit_grace_seconds=60)
    assert time_limits(settings, None) == (3600, 3660)
    assert time_limits(settings, 600) == (600, 660)
    assert time_limits(settings, 10**6) == (3600, 3660)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    value = f"bwtest-{uuid.uuid4().hex[:10]}:"
    yield value
    delete_redis_prefix(redis_url, value)


def test_enqueue_puts_one_message_on_the_training_queue(redis_url: str, prefix: str) -> None:
    settings = Settings(_env_file=None, broker_url=f"{redis_url}/0", broker_key_prefix=prefix)
    enqueue_training(make_celery(settings, producer=True), settings, "job-1", "task-1", soft_time_limit=120)
    client = redis.Redis.from_url(f"{redis_url}/0")
    try:
        raw = client.lrange(f"{prefix}{TRAINING_QUEUE}", 0, -1)
    finally:
        client.close()
    assert len(raw) == 1
    message = json.loads(raw[0])
    headers = message["headers"]
    assert headers["task"] == TRAIN_TASK and headers["id"] == "task-1"
    assert headers["timelimit"] == [120 + settings.job_time_limit_grace_seconds, 120]
    # The body a worker will run: Celery's protocol 2, [args, kwargs, embed], base64-encoded JSON.
    assert message["properties"]["body_encoding"] == "base64"
    assert message["content-type"] == "application/json"
    args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert args == ["job-1"] and kwargs == {}


class RedisServer:
    """A private redis-server on its own port, to stop and start without touching the shared one."""

    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_enqueue_fails_fast_while_redis_is_down_and_recovers_without_restart(
    private_redis: RedisServer,
) -> None:
    settings = Settings(_env_file=None, broker_url=f"redis://127.0.0.1:{private_redis.port}/0")
    app = make_celery(settings, producer=True)
    enqueue_training(app, settings, "before", "t-before")  # a pooled connection exists now

    private_redis.stop()
    for attempt in range(2):  # the stale pooled connection, then a fresh connect attempt
        started = time.monotonic()
        with pytest.raises(QueueUnavailable) as info:
            enqueue_training(app, settings, f"down-{attempt}", f"t-down-{attempt}")
        # Seconds, not kombu's default retries (minutes); generous for a loaded machine.
        assert time.monotonic() - started < 10.0
        assert "unreachable" in str(info.value) and "not queued" in str(info.value)

    private_redis.start()
    enqueue_training(app, settings, "after", "t-after")  # same app, same process: no restart
    client = redis.Redis(port=private_redis.port)
    try:
        assert client.llen(TRAINING_QUEUE) == 1  # only "after": the restarted server started empty
    finally:
        client.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://app:s3cret@cache.example:6380/1", "rediss://app:***@cache.example:6380/1"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("sqla+postgresql://u:s3cret@db/broker", "sqla+postgresql://u:***@db/broker"),
        ("sqla+sqlite:////var/lib/binwatch/broker.db", "sqla+sqlite:////var/lib/binwatch/broker.db"),
    ],
)
def test_broker_passwords_never_reach_messages(url: str, shown: str) -> None:
    assert redact_broker_url(url) == shown
    if url.startswith("redis://:s3cret@"):  # the error of a real (refused) connection, too
        settings = Settings(_env_file=None, broker_url=url.replace("redis:6379", "127.0.0.1:1"))
        with pytest.raises(QueueUnavailable) as info:
            enqueue_training(make_celery(settings, producer=True), settings, "j", "t")
        assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("imports", "forbidden"),
    [
        ("api.app, api.routes.training_jobs", "worker"),
        ("worker.celery_app, worker.tasks, worker.runner, worker.healthcheck, binwatch.cli", "api"),
    ],
)
def test_api_and_worker_never_import_each_other(imports: str, forbidden: str) -> None:
    code = (
        f"import sys, {imports}\n"
        f"bad = sorted(m for m in sys.modules if m == {forbidden!r} or m.startswith({forbidden!r} + '.'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
