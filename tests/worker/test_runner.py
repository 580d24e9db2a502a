"""worker.runner in-process (no Celery): training, registration, promotion, resume on a new host, failures.

Real Postgres, real ABID photos, real artifact stores (a local folder, and S3 on a moto server).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from records import jobs, registry
from records.artifacts import open_artifact_store
from records.migrate import upgrade_database
from records.orm import ModelVersion, Promotion, TrainingJob
from settings import Settings
from tests.worker.support import Jobs
from worker.runner import Outcome, Resources, run_job

pytestmark = pytest.mark.slow


def make_settings(pg_url: str, tmp: Path, **kw: object) -> Settings:
    values: dict[str, object] = dict(
        database_url=pg_url,
        artifact_store=str(tmp / "artifacts"),
        home=tmp / "home",
        device="cpu",
        job_heartbeat_seconds=0.5,
        job_stale_after_seconds=3,
        job_cancel_poll_seconds=0.2,
        # Never contacted: these runs call the runner directly.
        broker_url="redis://127.0.0.1:1/0",
    )
    values.update(kw)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def env(pg_url: str, tmp_path: Path) -> Iterator[tuple[Settings, Jobs, Resources]]:
    upgrade_database(pg_url)
    settings = make_settings(pg_url, tmp_path)
    helper = Jobs(settings)
    res = Resources(settings, helper.sessions, open_artifact_store(settings.resolved_artifact_store))
    yield settings, helper, res
    helper.close()


def versions_of(helper: Jobs, job_id: str) -> list[ModelVersion]:
    with helper.sessions() as s:
        return list(s.scalars(sa.select(ModelVersion).where(ModelVersion.training_job_id == job_id)))


def test_success_registers_one_version_and_applies_if_better(env: tuple[Settings, Jobs, Resources]) -> None:
    settings, helper, res = env
    first = helper.submit(policy="if_better", enqueue=False, epochs=2)
    assert run_job(first, res) == Outcome.SUCCEEDED
    job = helper.get(first)
    assert job.status == "succeeded" and job.epoch == 2 and job.error is None
    assert job.promotion_decision == "policy 'if_better': promoted, no model was active"
    [version] = versions_of(helper, first)
    assert job.model_version_id == version.id and version.is_active and version.source == "job"
    assert res.artifacts.exists(version.artifact_key) and set(version.plots) == {
        "confusion_matrix",
        "training_curves",
    }
    assert version.metrics["evaluated_on"].startswith("this job's validation split")
    # The version carries the verdict operating points measured on its validation split (issue 22).
    points = version.operating_points
    assert points is not None and points["measured_on"].startswith("its validation split")
    assert set(points["scores"]["neighbour_ratio"]["mismatch"]) == {"2%", "5%"}
    assert [m.epoch for m in helper.epochs(first)] == [1, 2]
    assert res.artifacts.list(f"jobs/{first}/epochs/") == []  # resume checkpoints are dropped on success

    # A redelivered message for the finished job does nothing: still one version.
    assert run_job(first, res) == Outcome.SKIPPED
    assert len(versions_of(helper, first)) == 1

    # if_better evaluates the active model on this job's own validation split, and says so.
    second = helper.submit(policy="if_better", enqueue=False, epochs=1, seed=5)
    assert run_job(second, res) == Outcome.SUCCEEDED
    job2 = helper.get(second)
    decision = job2.promotion_decision or ""
    assert f"active version {version.id}" in decision and "on this job's validation split" in decision
    [version2] = versions_of(helper, second)
    with helper.sessions() as s:
        active = registry.active_version(s)
        promotions = list(s.scalars(sa.select(Promotion).order_by(Promotion.id)))
    promoted = decision.startswith("policy 'if_better': promoted")
    # The decision quotes both figures on the same split: the new model's is its own stored validation
    # accuracy, and promotion happened exactly when it was the higher one.
    found = re.search(r"accuracy on .* is (\d\.\d{4}),? (?:against|not above) (\d\.\d{4})", decision)
    assert found, decision
    mine, theirs = float(found.group(1)), float(found.group(2))
    assert mine == round(version2.metrics["accuracy"], 4) and 0.0 <= theirs <= 1.0
    assert promoted is (mine > theirs), decision
    assert (active.id == version2.id) is promoted  # type: ignore[union-attr]
    assert len(promotions) == (2 if promoted else 1)
    assert promotions[0].actor == f"training job {first}" and promotions[0].reason == job.promotion_decision


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("missing", "does not exist"),
        ("empty", "no images with metadata found"),
        ("not-abid", "is not in ABID layout"),
    ],
)
def test_unusable_dataset_fails_fast_with_a_readable_error(
    env: tuple[Settings, Jobs, Resources], tmp_path: Path, layout: str, expected: str
) -> None:
    _settings, helper, res = env
    root = tmp_path / "data"
    if layout == "empty":
        (root / "bin-images").mkdir(parents=True)
        (root / "metadata").mkdir()
    elif layout == "not-abid":
        (root / "photos").mkdir(parents=True)
    job_id = helper.submit({"uri": str(root)}, enqueue=False)
    assert run_job(job_id, res) == Outcome.FAILED
    job = helper.get(job_id)
    # Failed fast: before any epoch (the records, not a clock, show that no training was attempted).
    assert job.epoch == 0 and helper.epochs(job_id) == []
    assert job.status == "failed" and job.error is not None
    assert job.error.startswith("dataset: ") and expected in job.error and str(root) in job.error
    assert versions_of(helper, job_id) == []


def test_time_limit_fails_the_job(env: tuple[Settings, Jobs, Resources]) -> None:
    _settings, helper, res = env
    job_id = helper.submit(enqueue=False, epochs=50)
    with helper.sessions() as s:  # below the API's minimum, to keep the test short
        job = s.get(TrainingJob, job_id)
        job.params = {**job.params, "time_limit_seconds": 3}  # type: ignore[union-attr]
        s.commit()
    assert run_job(job_id, res) == Outcome.FAILED
    job = helper.get(job_id)
    assert job.status == "failed" and "time limit of 3 s exceeded" in (job.error or "")
    assert job.epoch < 50 and versions_of(helper, job_id) == []


def test_a_job_whose_workers_all_died_is_failed_not_run(env: tuple[Settings, Jobs, Resources]) -> None:
    settings, helper, res = env
    job_id = helper.submit(enqueue=False)
    with helper.sessions() as s:
        for n in range(settings.job_max_attempts):  # each claimant dies: its heartbeat goes stale
            assert jobs.claim_job(s, job_id, f"gpu-{n}", 3, max_attempts=settings.job_max_attempts).job
            s.execute(
                sa.update(TrainingJob).values(heartbeat_at=sa.func.now() - sa.text("interval '1 hour'"))
            )
            s.commit()
    started = time.monotonic()
    assert run_job(job_id, res) == Outcome.FAILED  # the redelivered task acknowledges, and runs nothing
    assert time.monotonic() - started < 5
    job = helper.get(job_id)
    assert job.status == "failed" and job.attempts == settings.job_max_attempts and job.epoch == 0
    assert job.error == (
        f"gave up after {settings.job_max_attempts} attempts: the worker running the job died each time "
        "(last on gpu-2; before that on gpu-1, gpu-0); see the worker logs of those hosts (out of memory, "
        "a crash, a killed process)"
    )
    assert helper.epochs(job_id) == [] and versions_of(helper, job_id) == []


def test_worker_that_lost_its_job_stops_without_touching_it(env: tuple[Settings, Jobs, Resources]) -> None:
    _settings, helper, res = env
    job_id = helper.submit(enqueue=False, epochs=50)

    def steal() -> bool:
        # Another worker takes over (this one was presumed dead) once the first epoch is stored; the
        # runner must notice through its heartbeat, not through this hook, so it always answers False.
        with helper.sessions() as s:
            s.execute(
                sa.update(TrainingJob)
                .where(TrainingJob.id == job_id, TrainingJob.epoch >= 1, TrainingJob.host != "other")
                .values(host="other")
            )
            s.commit()
        return False

    assert run_job(job_id, res, shutdown_requested=steal) == Outcome.LOST
    job = helper.get(job_id)
    assert job.status == "running" and job.host == "other" and job.finished_at is None


def test_resume_on_a_new_host_from_s3_artifacts(
    pg_url: str, tmp_path: Path, moto_endpoint: str, s3_bucket: str
) -> None:
    upgrade_database(pg_url)
    settings_a = make_settings(
        pg_url,
        tmp_path,
        artifact_store=f"s3://{s3_bucket}/bw",
        s3_endpoint_url=moto_endpoint,
        job_work_dir=tmp_path / "host-a",
    )
    helper = Jobs(settings_a)
    store = open_artifact_store(settings_a.resolved_artifact_store, moto_endpoint)
    try:
        job_id = helper.submit(enqueue=False, epochs=3, policy="always")

        # Host A stops (SIGTERM from a spot interruption notice) once epoch 1 is stored: the job goes back
        # to the queue with its checkpoint in S3.
        res_a = Resources(settings_a, helper.sessions, store)
        assert (
            run_job(job_id, res_a, shutdown_requested=lambda: helper.get(job_id).epoch >= 1)
            == Outcome.REQUEUE
        )
        job = helper.get(job_id)
        assert job.status == "queued" and job.epoch == 1
        assert store.exists(f"jobs/{job_id}/epochs/0001/last.pt")
        assert not (tmp_path / "host-a" / job_id).exists()

        # Host B has an empty disk: everything it resumes from comes from S3.
        settings_b = settings_a.model_copy(update={"job_work_dir": tmp_path / "host-b"})
        res_b = Resources(settings_b, helper.sessions, store)
        assert run_job(job_id, res_b) == Outcome.SUCCEEDED
        rows = helper.epochs(job_id)
        assert [r.epoch for r in rows] == [1, 2, 3]
        run_a, run_b = rows[0].metrics["run"], rows[1].metrics["run"]
        assert run_a != run_b and rows[2].metrics["run"] == run_b
        assert rows[0].metrics["resumed_after_epoch"] == 0
        assert rows[1].metrics["resumed_after_epoch"] == 1 and rows[2].metrics["resumed_after_epoch"] == 1
        [version] = versions_of(helper, job_id)
        assert version.metrics["resumed_after_epoch"] == 1 and version.is_active
        assert store.exists(version.artifact_key) and version.artifact_key.startswith("models/")
        with helper.sessions() as s:
            assert jobs.get_job(s, job_id).host == run_b  # type: ignore[union-attr]
    finally:
        helper.close()


def test_hard_time_limit_kill_is_recorded_on_the_job(env: tuple[Settings, Jobs, Resources]) -> None:
    # Under the prefork pool Celery kills the child at the hard limit and calls on_failure in the
    # worker's main process; that is the only place left to record it. Here a separate process, configured
    # only through BINWATCH_* like a worker, plays that main process.
    import subprocess
    import sys

    settings, helper, _res = env
    job_id = helper.submit(enqueue=False)
    with helper.sessions() as s:
        jobs.claim_job(s, job_id, "killed child", 3)
    code = (
        "import sys\n"
        "from celery.exceptions import TimeLimitExceeded\n"
        "from worker.celery_app import app\n"
        "task = app.tasks['binwatch.train']\n"
        "task.on_failure(TimeLimitExceeded(3900), 'task-id', (sys.argv[1],), {}, None)\n"
    )
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith("BINWATCH_")}
    proc_env.update(
        BINWATCH_DATABASE_URL=settings.resolved_database_url,
        BINWATCH_ARTIFACT_STORE=settings.resolved_artifact_store,
        BINWATCH_HOME=str(settings.home),
    )
    done = subprocess.run(
        [sys.executable, "-c", code, job_id], env=proc_env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    job = helper.get(job_id)
    assert job.status == "failed" and job.error == "hard time limit of 3900 s exceeded; the job was killed"


def test_the_worker_never_contacts_an_endpoint_or_folder_the_operator_did_not_allow(
    pg_url: str, tmp_path: Path
) -> None:
    # Rows stored before the operator narrowed the lists (or written by anything but the API) are
    # refused by the worker itself, before a connection is opened; allowing the endpoint is what
    # makes the worker go there.
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Listener(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    upgrade_database(pg_url)
    try:
        for allowlist, roots, contacted in (([], [], False), ([endpoint], ["/nowhere"], True)):
            settings = make_settings(
                pg_url, tmp_path, dataset_endpoint_allowlist=allowlist, dataset_roots=roots
            )
            helper = Jobs(settings)
            res = Resources(settings, helper.sessions, open_artifact_store(settings.resolved_artifact_store))
            try:
                job_id = helper.submit({"uri": "s3://bucket/abid/", "endpoint_url": endpoint}, enqueue=False)
                assert run_job(job_id, res) == Outcome.FAILED
                error = helper.get(job_id).error or ""
                if contacted:
                    assert seen and "HTTP 403" in error, error
                else:
                    assert seen == [] and "refused: endpoint_url is not on" in error, error
                outside = helper.submit({"uri": str(tmp_path)}, enqueue=False)
                assert run_job(outside, res) == Outcome.FAILED
                refused = helper.get(outside).error or ""
                assert ("BINWATCH_DATASET_ROOTS" in refused) == bool(roots), refused
            finally:
                helper.close()
    finally:
        server.shutdown()


def test_a_resume_whose_checkpoints_are_gone_starts_over(env: tuple[Settings, Jobs, Resources]) -> None:
    _settings, helper, res = env
    job_id = helper.submit(enqueue=False, epochs=2, policy="never")
    assert run_job(job_id, res, shutdown_requested=lambda: helper.get(job_id).epoch >= 1) == Outcome.REQUEUE
    assert helper.get(job_id).epoch == 1
    # Someone deleted the stored checkpoints the database still points at.
    for key in res.artifacts.list(f"jobs/{job_id}/epochs/"):
        res.artifacts.delete(key)
    assert run_job(job_id, res) == Outcome.SUCCEEDED
    rows = helper.epochs(job_id)
    # Epoch 1 was trained again (a new run, resumed after nothing), then epoch 2; one version.
    assert [r.epoch for r in rows] == [1, 2]
    assert rows[0].metrics["run"] == rows[1].metrics["run"] and rows[1].metrics["resumed_after_epoch"] == 0
    [version] = versions_of(helper, job_id)
    assert version.metrics["resumed_after_epoch"] == 0


def test_if_better_never_promotes_over_an_active_model_it_cannot_verify(
    env: tuple[Settings, Jobs, Resources],
) -> None:
    _settings, helper, res = env
    first = helper.submit(policy="always", enqueue=False, epochs=1)
    assert run_job(first, res) == Outcome.SUCCEEDED
    [active] = versions_of(helper, first)
    # The active version's stored checkpoint is replaced behind the registry's back.
    res.artifacts.put_bytes(active.artifact_key, b"not the registered checkpoint")
    second = helper.submit(policy="if_better", enqueue=False, epochs=1, seed=5)
    assert run_job(second, res) == Outcome.SUCCEEDED
    decision = helper.get(second).promotion_decision or ""
    assert decision.startswith("policy 'if_better': not promoted"), decision
    assert f"active version {active.id} could not be evaluated" in decision and "sha256" in decision, decision
    [candidate] = versions_of(helper, second)
    with helper.sessions() as s:
        assert registry.active_version(s).id == active.id  # type: ignore[union-attr]
    assert not candidate.is_active


def test_a_second_live_worker_gives_the_job_back_busy(env: tuple[Settings, Jobs, Resources]) -> None:
    import threading

    settings, helper, res = env
    job_id = helper.submit(enqueue=False, epochs=2, policy="never")
    second_done = threading.Event()
    outcomes: list[Outcome] = []
    first = threading.Thread(
        target=lambda: outcomes.append(run_job(job_id, res, shutdown_requested=second_done.is_set))
    )
    first.start()
    try:
        deadline = time.monotonic() + 120
        while helper.get(job_id).status != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        owner = helper.get(job_id).host
        assert owner, "the first worker claimed the job"
        # Another worker (its own resources, its own owner token) gets a delivery of the same job.
        other = Resources(settings, helper.sessions, res.artifacts)
        assert run_job(job_id, other) == Outcome.BUSY
        job = helper.get(job_id)
        assert job.status == "running" and job.host == owner and job.attempts == 1
    finally:
        second_done.set()
        first.join(timeout=300)
    # The first worker then hands the job back (shutdown) and a later delivery finishes it, once.
    assert outcomes == [Outcome.REQUEUE]
    assert run_job(job_id, res) == Outcome.SUCCEEDED
    assert len(versions_of(helper, job_id)) == 1
