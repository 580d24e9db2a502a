"""Fixtures shared by every test package: real Postgres, real Redis, a real moto_server, real ABID data.

Nothing here skips when a service is missing: `make test` starts Postgres and Redis first
(scripts/ensure-services.sh), and a test that cannot reach them fails with the reason.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ABID = Path(os.environ.get("BINWATCH_ABID", REPO.parent / "shared" / "abid")).resolve()
ABID_EXTRA = Path(os.environ.get("BINWATCH_ABID_EXTRA", REPO.parent / "shared" / "abid-extra")).resolve()
PG_ADMIN_URL = os.environ.get("BINWATCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BINWATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def abid_root() -> Path:
    if not (ABID / "bin-images").is_dir():
        pytest.fail(f"real ABID data not found at {ABID} (set BINWATCH_ABID); tests need ../shared/abid")
    return ABID


@pytest.fixture(scope="session")
def abid_extra_root() -> Path:
    if not (ABID_EXTRA / "bin-images").is_dir():
        pytest.fail(
            f"the extra ABID photos are not at {ABID_EXTRA} (set BINWATCH_ABID_EXTRA); tests need "
            "../shared/abid-extra"
        )
    return ABID_EXTRA


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the admin database on the real Postgres; fails (never skips) when it is unreachable."""
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # noqa: BLE001 - report whatever the driver says
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable ({exc}); run scripts/ensure-services.sh")
    finally:
        engine.dispose()
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty Postgres database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"binwatch_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = pg_server_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Redis at {REDIS_URL} is not reachable ({exc}); run scripts/ensure-services.sh")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real moto_server process on loopback (S3 over HTTP), for the whole session."""
    port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(autouse=True, scope="session")
def _aws_test_credentials() -> None:
    # moto_server accepts any credentials; boto3 only needs some to sign with.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> str:
    """A new empty bucket on the moto_server; returns its name."""
    import boto3

    name = f"bw-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name
