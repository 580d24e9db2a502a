"""The whole deployment for the training-job end-to-end tests, started once per module:

Postgres (one database for the module), a private key prefix on the real Redis, a real `binwatch serve`
API process, a real `binwatch worker` process, a local artifact folder, and a baseline model version
(tiny, trained on real ABID photos) that the API serves before any job runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from records import apikeys, model_versions
from records.artifacts import open_artifact_store
from records.migrate import upgrade_database
from settings import Settings
from tests.api.support import Server, start_server, tiny_checkpoint
from tests.worker.support import (
    Jobs,
    WorkerProcess,
    delete_redis_prefix,
    settings_from_env,
    start_worker,
    worker_env,
)


@dataclass
class Deployment:
    env: dict[str, str]
    settings: Settings
    jobs: Jobs
    api: Server
    worker: WorkerProcess
    key: str
    baseline_id: int
    tmp: Path

    def logs(self) -> str:
        return f"--- api\n{self.api.log()[-6000:]}\n--- worker\n{self.worker.log()[-6000:]}"


@pytest.fixture(scope="module")
def module_pg_url(pg_server_url: str) -> Iterator[str]:
    name = f"binwatch_e2e_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def register_baseline(helper: Jobs, checkpoint: Path) -> int:
    store = open_artifact_store(
        helper.settings.resolved_artifact_store, endpoint_url=helper.settings.s3_endpoint_url
    )
    with helper.sessions() as session:
        version, _ = model_versions.register_checkpoint(
            session, store, checkpoint, model_versions.read_checkpoint_metadata(checkpoint), name="baseline"
        )
        model_versions.promote(session, version.id, actor="e2e", reason="baseline for the e2e tests")
        session.commit()
        return version.id


def create_key(helper: Jobs, scopes: list[str]) -> str:
    with helper.sessions() as session:
        created = apikeys.create_api_key(session, "e2e", scopes)
        session.commit()
        return created.secret


@pytest.fixture(scope="module")
def deployment(
    module_pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("e2e")
    upgrade_database(module_pg_url)
    prefix = f"bwtest-{uuid.uuid4().hex[:10]}:"
    env = worker_env(
        database_url=module_pg_url,
        broker_url=f"{redis_url}/0",
        home=tmp / "home",
        artifacts=tmp / "artifacts",
        key_prefix=prefix,
    )
    settings = settings_from_env(env)
    helper = Jobs(settings)
    baseline = register_baseline(helper, tiny_checkpoint(tmp_path_factory.getbasetemp() / "checkpoints", 11))
    key = create_key(helper, ["predict", "train"])
    # Two API processes: each must find and load the promoted model on its own.
    api = start_server(dict(env, BINWATCH_WORKERS="2"), tmp / "logs")
    worker = start_worker(env, tmp / "logs")
    try:
        api.wait_ready()
        worker.wait_ready()
        yield Deployment(env, settings, helper, api, worker, key, baseline, tmp)
    finally:
        worker.stop(timeout=15)
        api.stop()
        helper.close()
        delete_redis_prefix(redis_url, prefix)


# -- the web console's real-browser tests (tests/e2e/browser.py, tests/e2e/test_console_browser.py) ----------

from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

from tests.e2e.browser import describe_page, screenshot, start_chrome  # noqa: E402


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Debian's headless chromium (1280x900, a fresh profile) for one test module; quit at its end."""
    tmp = tmp_path_factory.mktemp("chromium")
    driver = start_chrome(tmp / "profile", log_path=tmp / "chromedriver.log")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """When a test that drives the browser fails, keep a screenshot and the page's HTML as artifacts."""
    outcome = yield
    report = outcome.get_result()
    driver = getattr(item, "funcargs", {}).get("browser")
    if driver is None or report.when != "call" or not report.failed:
        return
    try:
        path = screenshot(driver, f"FAILED-{item.name}")
        path.with_suffix(".html").write_text(driver.page_source)
        report.sections.append(("browser", f"screenshot: {path}\n{describe_page(driver)}"))
    except Exception as exc:  # noqa: BLE001 - never hide the test's own failure
        report.sections.append(("browser", f"no screenshot: {exc!r}"))
