"""/readyz follows the database: a private Postgres the test starts is stopped under a running service
(503 naming the unreachable database, liveness unaffected) and started again (200, no restart needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.support import clean_env, start_server
from tests.conftest import free_port

pytestmark = pytest.mark.slow

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


class PrivatePostgres:
    """initdb + pg_ctl on its own port and folder (as the postgres user when the tests run as root)."""

    def __init__(self) -> None:
        if PG_BIN is None or not (PG_BIN / "pg_ctl").is_file():
            raise AssertionError("PostgreSQL server binaries are needed (Debian: postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="binwatch-pg-", dir="/tmp"))
        self.data, self.port = self.root / "data", free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.as_user, str(PG_BIN / tool), *args], capture_output=True, text=True)
        assert done.returncode == 0, f"{tool}: {done.stdout}\n{done.stderr}"

    @property
    def url(self) -> str:
        # trust auth ignores the password: it is there to show it never appears in an answer.
        return f"postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        subprocess.run(
            [*self.as_user, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.remove()


def ready(url: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.get("/readyz")


def wait_status(url: str, status: int, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        answer = ready(url)
        if answer.status_code == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def test_readyz_follows_the_database(tmp_path: Path, private_postgres: PrivatePostgres) -> None:
    env = clean_env(
        BINWATCH_HOME=str(tmp_path / "home"),
        BINWATCH_DEVICE="cpu",
        BINWATCH_DATABASE_URL=private_postgres.url,
        BINWATCH_INSTALL_BUNDLED_MODEL="true",
    )
    server = start_server(env, tmp_path / "logs")
    try:
        server.wait_ready()
        private_postgres.stop()
        down = wait_status(server.url, 503)
        assert down.status_code == 503, down.text
        assert down.headers["content-type"] == "application/problem+json"
        body = down.json()
        assert "is unreachable" in body["database"] and f":{private_postgres.port}/" in body["database"]
        assert "not ready: database" in body["detail"]
        assert "s3cret-pw" not in down.text
        # Liveness is not readiness: the process is fine, only its database is gone.
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/healthz").status_code == 200

        private_postgres.start()
        back = wait_status(server.url, 200)
        assert back.status_code == 200, back.text
        assert back.json()["database"] == "ok" and back.json()["model"]["id"] == 1
    finally:
        server.stop()
