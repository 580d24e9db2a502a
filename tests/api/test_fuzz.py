"""Schema fuzzing of the live API (schemathesis, every operation, every check) on both backends.

A real `binwatch serve` process per backend, the bundled model installed, real HTTP. The run is bounded
(a fixed seed and a few examples per operation) so the suite stays fast; docs/security.md gives the
command for a longer run. Pass: no 5xx, every response (status, content type, body, headers) as the
OpenAPI document says, schema-valid requests accepted (tests/api/schemathesis.toml lists the few 422s a
schema cannot express), invalid ones refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.api.support import clean_env, create_key, encode, start_server
from tests.conftest import REPO
from tests.worker.support import delete_redis_prefix

pytestmark = pytest.mark.slow

ST = Path(sys.executable).with_name("st")
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 8
SEED = 20261126


def _seed(url: str, key: str) -> None:
    """The examples' bin (00011) with a check, so paths with a check id reach stored data."""
    from PIL import Image

    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=120) as client:
        assert client.put("/v1/bins/00011", json={"expected_count": 3}).status_code in (200, 201)
        photo = encode(Image.new("RGB", (96, 96), (120, 90, 60)), "JPEG")
        check = client.post("/v1/bins/00011/checks", files={"image": ("bin.jpg", photo, "image/jpeg")})
        assert check.status_code == 201, check.text


def _checks_created(database_url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM bin_checks")).scalar_one())
    finally:
        engine.dispose()


def _fuzz(url: str, key: str, report: Path, database_url: str) -> None:
    _seed(url, key)
    before = _checks_created(database_url)
    # Real photos for the photo parts (tests/api/fuzz_hooks.py), so checks are created, read and reviewed.
    env = dict(os.environ, SCHEMATHESIS_HOOKS="tests.api.fuzz_hooks", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [
            str(ST),
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            f"{url}/openapi.json",
            "--header",
            f"X-API-Key: {key}",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            # One worker: with several threads, Python 3.11's ast module trips over its own recursion
            # counter inside Hypothesis ("AST constructor recursion depth mismatch"), a tool error.
            "--workers",
            "1",
            "--report",
            "junit",
            "--report-dir",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=report,
        env=env,
    )
    (report / "schemathesis.txt").write_text(result.stdout + result.stderr)
    tail = result.stdout[:8000] + "\n…\n" + result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    assert "Tested: 18" in result.stdout or "Selected: " in result.stdout, tail
    created = _checks_created(database_url) - before
    (report / "checks-created.txt").write_text(f"{created}\n")
    print(f"the fuzzer created {created} checks")
    assert created >= 10, f"the fuzzer created only {created} checks: are the photo hooks loaded?\n{tail}"


def test_fuzz_embedded_default(tmp_path: Path) -> None:
    env = clean_env(BINWATCH_HOME=str(tmp_path / "home"), BINWATCH_DEVICE="cpu")
    server = start_server(env, tmp_path / "logs")
    try:
        server.wait_ready()
        database = f"sqlite:///{tmp_path / 'home' / 'binwatch.db'}"
        _fuzz(server.url, create_key(database, "admin", name="fuzz"), tmp_path, database)
        assert "Traceback" not in server.log(), server.log()[-6000:]
    finally:
        server.stop()


def test_fuzz_postgres_and_redis(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    prefix = f"bwfuzz-{uuid.uuid4().hex[:8]}:"
    env = clean_env(
        BINWATCH_HOME=str(tmp_path / "home"),
        BINWATCH_DEVICE="cpu",
        BINWATCH_DATABASE_URL=pg_url,
        BINWATCH_BROKER_URL=f"{redis_url}/0",
        BINWATCH_BROKER_KEY_PREFIX=prefix,
        BINWATCH_INSTALL_BUNDLED_MODEL="true",
    )
    server = start_server(env, tmp_path / "logs")
    try:
        server.wait_ready()
        _fuzz(server.url, create_key(pg_url, "admin", name="fuzz"), tmp_path, pg_url)
        assert "Traceback" not in server.log(), server.log()[-6000:]
    finally:
        server.stop()
        delete_redis_prefix(redis_url, prefix)
