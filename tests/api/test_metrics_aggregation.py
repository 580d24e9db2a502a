"""/metrics with several uvicorn workers: whichever worker answers, it reports the sum over all of them
(prometheus_client's multiprocess mode, api/metrics.py), and `binwatch serve` prepares the directory.

The first tests run in this process, with prometheus_client's file-backed values switched on by hand and
two fake worker pids; the last one starts `binwatch serve` with BINWATCH_WORKERS=2 over real HTTP.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client import values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import Metrics
from binwatch.cli.service import MULTIPROC_DIR_ENV, _prepare_metrics_dir
from tests.api.support import clean_env, start_server


def samples(text: str | bytes, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` in a Prometheus text exposition, by sorted labels."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def route_count(text: str | bytes, route: str) -> float:
    return sum(
        v
        for labels, v in samples(text, "binwatch_http_requests_total").items()
        if dict(labels)["route"] == route
    )


# -- in process: two fake workers sharing one directory ----------------------------------------------


class FakeWorker:
    """A Metrics whose values go to the shared directory under ``pid``, as that worker's would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, pid: int) -> None:
        self.monkeypatch = monkeypatch
        self.value_class = values.MultiProcessValue(lambda: pid)
        with self.active():
            self.metrics = Metrics()

    @contextmanager
    def active(self) -> Iterator[Metrics | None]:
        # Labelled series create their values when first used, from prometheus_client's module-level
        # value class: it must be this worker's whenever this worker's metrics are touched.
        with self.monkeypatch.context() as patch:
            patch.setattr(values, "ValueClass", self.value_class)
            yield getattr(self, "metrics", None)


@pytest.fixture
def shared_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "multiproc"
    path.mkdir()
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(path))
    yield path
    values.close_all_multiprocess_files()


def test_metrics_sum_over_workers_and_forget_dead_workers_gauges(
    shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Worker "b" is a real process, so that it can die; "a" is this one.
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        a, b = FakeWorker(monkeypatch, os.getpid()), FakeWorker(monkeypatch, sleeper.pid)
        with a.active() as m:
            assert m is not None and m.multiprocess_dir == str(shared_dir)
            m.http_requests.labels("GET", "/healthz", "200").inc(3)
            m.queue_depth.set(2)
            m.set_active_model(1, "v1", "a" * 64)
            m.set_active_model(2, "v2", "b" * 64)  # a swapped to version 2
        with b.active() as m:
            assert m is not None
            m.http_requests.labels("GET", "/healthz", "200").inc(4)
            m.queue_depth.set(5)
            m.set_active_model(1, "v1", "a" * 64)  # b has not yet
        for worker in (a, b):  # whichever answers the scrape
            text = worker.metrics.render()
            assert route_count(text, "/healthz") == 7
            assert samples(text, "binwatch_inference_queue_depth") == {(): 7}
            # No pid label: the same series as with one process. Both versions are served right now.
            info = samples(text, "binwatch_active_model_info")
            assert {dict(k)["version"]: v for k, v in info.items()} == {"1": 1, "2": 1}

        sleeper.kill()
        sleeper.wait()
        text = a.metrics.render()
        assert route_count(text, "/healthz") == 7, "a dead worker's requests still count"
        assert samples(text, "binwatch_inference_queue_depth") == {(): 2}, "its queue does not"
        info = samples(text, "binwatch_active_model_info")
        assert {dict(k)["version"]: v for k, v in info.items()} == {"1": 0, "2": 1}
        assert not list(shared_dir.glob(f"gauge_*_{sleeper.pid}.db"))
        assert list(shared_dir.glob(f"counter_{sleeper.pid}.db"))

        a.metrics.process_exiting()
        assert not list(shared_dir.glob(f"gauge_*_{os.getpid()}.db"))
        assert route_count(a.metrics.render(), "/healthz") == 7
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.usefixtures("no_configured_dir")
def test_per_process_mode_is_unchanged_without_the_variable() -> None:
    first, second = Metrics(), Metrics()  # many apps in one process keep separate registries
    assert first.multiprocess_dir is None
    first.http_requests.labels("GET", "/healthz", "200").inc()
    first.set_active_model(1, "v1", "a" * 64)
    first.set_active_model(2, "v2", "b" * 64)
    text = first.render()
    assert route_count(text, "/healthz") == 1 and route_count(second.render(), "/healthz") == 0
    info = samples(text, "binwatch_active_model_info")
    assert [dict(k)["version"] for k in info] == ["2"], "the old version's series is gone"


def test_the_variable_set_after_prometheus_client_was_imported_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process's values live in memory: reading the directory would report nothing of them.
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    metrics = Metrics()
    assert metrics.multiprocess_dir is None
    metrics.http_requests.labels("GET", "/healthz", "200").inc()
    assert route_count(metrics.render(), "/healthz") == 1


# -- `binwatch serve`'s directory --------------------------------------------------------------------


@pytest.fixture
def no_configured_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # setenv first: delenv of an absent variable records nothing, so the one serve sets in os.environ
    # would outlive the test and reach every `binwatch serve` later tests start.
    monkeypatch.setenv(MULTIPROC_DIR_ENV, "")
    monkeypatch.delenv(MULTIPROC_DIR_ENV)


@pytest.mark.usefixtures("no_configured_dir")
def test_serve_uses_no_directory_for_one_worker() -> None:
    assert _prepare_metrics_dir(1) == (None, False)
    assert MULTIPROC_DIR_ENV not in os.environ


@pytest.mark.usefixtures("no_configured_dir")
def test_serve_makes_a_fresh_private_directory_for_several_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    path, owned = _prepare_metrics_dir(2)
    assert owned and path is not None and path.parent == tmp_path and not list(path.iterdir())
    assert os.environ[MULTIPROC_DIR_ENV] == str(path), "set before uvicorn spawns its workers"


def test_serve_empties_the_operators_directory_of_old_metric_files_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured = tmp_path / "theirs"
    configured.mkdir()
    stale = ["counter_12.db", "histogram_12.db", "gauge_livesum_12.db", "gauge_all_13.db"]
    kept = ["README", "counter.db", "notes_12.db"]
    for name in stale + kept:
        (configured / name).write_text("x")
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(configured))
    assert _prepare_metrics_dir(2) == (configured, False), "theirs, not removed on exit"
    assert sorted(p.name for p in configured.iterdir()) == sorted(kept)
    missing = tmp_path / "not-yet"
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(missing))
    assert _prepare_metrics_dir(1) == (missing, False) and missing.is_dir()


# -- real HTTP: `binwatch serve` with two workers ----------------------------------------------------


def counts_by_pid(directory: Path, route: str) -> dict[int, float]:
    """Requests to ``route`` each worker counted, read from its own file."""
    out: dict[int, float] = {}
    for file in directory.glob("counter_*.db"):
        pid = int(file.stem.split("_")[1])
        for metric in MultiProcessCollector.merge([str(file)]):
            for s in metric.samples:
                if s.name == "binwatch_http_requests_total" and s.labels["route"] == route:
                    out[pid] = out.get(pid, 0) + s.value
    return out


def started(log: str) -> int:
    """Worker processes that have finished starting, as uvicorn logs them."""
    return log.count("Application startup complete")


def fresh_get(url: str) -> httpx.Response:
    # A new connection each time: a kept-alive one would stay with the worker that accepted it.
    return httpx.get(url, headers={"Connection": "close"}, timeout=30)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"no {what} after {timeout}s\n{log()}")


@pytest.mark.slow
def test_metrics_of_two_workers_are_summed_over_http(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = clean_env(
        BINWATCH_HOME=str(tmp_path / "home"),
        BINWATCH_WORKERS="2",
        BINWATCH_INSTALL_BUNDLED_MODEL="false",  # no model needed: faster start
        TMPDIR=str(temp),
    )
    env.pop(MULTIPROC_DIR_ENV, None)
    server = start_server(env, tmp_path / "logs")
    try:
        wait_for(lambda: started(server.log()) >= 2, 120, "2 workers", server.log)
        found = re.search(rf"{MULTIPROC_DIR_ENV}=(\S+?)\)", server.log())
        assert found, server.log()
        directory = Path(found[1])
        assert directory.parent == temp
        workers = {int(p) for p in re.findall(r"Started server process \[(\d+)\]", server.log())}
        assert len(workers) == 2 and server.proc.pid not in workers

        # Concurrent requests on fresh connections, until the kernel has handed some to each worker.
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            while len(counts_by_pid(directory, "/healthz")) < 2 and sent < 800:
                assert all(r.status_code == 200 for r in pool.map(fresh_get, [f"{server.url}/healthz"] * 40))
                sent += 40
        split = counts_by_pid(directory, "/healthz")
        assert set(split) == workers and sum(split.values()) == sent, split

        # Scrape until each worker has answered a scrape at least once: every one reports the total.
        scrapes = 0
        while len(counts_by_pid(directory, "/metrics")) < 2 and scrapes < 200:
            scrape = fresh_get(f"{server.url}/metrics")
            scrapes += 1
            assert scrape.status_code == 200
            assert route_count(scrape.text, "/healthz") == sent, (scrapes, split)
            assert samples(scrape.text, "binwatch_inference_queue_depth") == {(): 0}
        assert set(counts_by_pid(directory, "/metrics")) == workers and scrapes >= 2

        # A worker killed outright: uvicorn replaces it; its requests still count, its gauges do not.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: started(server.log()) >= 3, 120, "new worker", server.log)
        text = fresh_get(f"{server.url}/metrics").text
        assert route_count(text, "/healthz") == sent
        assert not list(directory.glob(f"gauge_*_{victim}.db"))
        assert (directory / f"counter_{victim}.db").is_file()
    finally:
        assert server.stop() in (0, -15), server.log()
    assert not directory.exists(), "serve removes the directory it made"
