"""Retraining is one HTTP call, and survives real faults (issue #4), end to end:

a real API process and a real worker process, real Redis and Postgres, real ABID photos. The SIGKILL and
SIGTERM cases (a worker dying mid-job) are in tests/worker/test_worker_process.py.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from records.job_queue import TRAINING_QUEUE
from records.orm import ModelVersion, Promotion
from tests.api.support import BINWATCH, start_server
from tests.conftest import ABID, REPO, free_port
from tests.e2e.conftest import Deployment, create_key
from tests.worker.support import wait_for
from tests.worker.test_job_queue import RedisServer

pytestmark = pytest.mark.slow

FINISHED = ("succeeded", "failed", "cancelled")
TINY = {"recipe": "smoke", "image_size": 64, "batch_size": 16}
PHOTO = ABID / "bin-images" / "00011.jpg"


def client(dep: Deployment, url: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=url or dep.api.url, headers={"Authorization": f"Bearer {dep.key}"}, timeout=60
    )


def submit(http: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("dataset", {"uri": str(ABID), "limit": 96})
    body.setdefault("hyperparameters", dict(TINY, epochs=2))
    return http.post("/v1/training-jobs", json=body)


def wait_job(
    http: httpx.Client, job_id: str, statuses: tuple[str, ...] = FINISHED, timeout: float = 240
) -> dict:
    return wait_for(
        lambda: (
            job if (job := http.get(f"/v1/training-jobs/{job_id}").json())["status"] in statuses else None
        ),
        timeout,
        f"job {job_id} to reach {statuses}",
        interval=0.2,
    )


class PredictionLoad(threading.Thread):
    """Predictions in a loop while a job runs: every status code and the model version that answered."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.stop = threading.Event()
        self.results: list[tuple[int, int | None]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        photo = PHOTO.read_bytes()
        with httpx.Client(base_url=self.url, headers={"X-API-Key": self.key}, timeout=60) as http:
            while not self.stop.is_set():
                try:
                    r = http.post("/v1/predictions", files={"images": ("bin.jpg", photo, "image/jpeg")})
                    model = r.json()["predictions"][0]["model"]["id"] if r.status_code == 200 else None
                    self.results.append((r.status_code, model))
                    if r.status_code != 200:
                        self.errors.append(r.text[:300])
                except httpx.HTTPError as exc:  # a dropped connection counts as a failed request
                    self.results.append((0, None))
                    self.errors.append(repr(exc))
                time.sleep(0.1)

    def models_seen(self) -> list[int | None]:
        return [m for _, m in self.results]


def test_submit_over_http_trains_registers_promotes_and_the_api_swaps(deployment: Deployment) -> None:
    dep = deployment
    with httpx.Client(base_url=dep.api.url, headers={"X-API-Key": dep.key}, timeout=60) as http:
        # Both API processes have loaded the baseline (readyz reached only one of them).
        ok = 0

        def warm() -> bool:
            nonlocal ok
            r = http.post("/v1/predictions", files={"images": ("bin.jpg", PHOTO.read_bytes(), "image/jpeg")})
            ok = ok + 1 if r.status_code == 200 else 0
            return ok >= 10

        wait_for(warm, 120, "ten predictions in a row")
    load = PredictionLoad(dep.api.url, dep.key)
    load.start()
    try:
        wait_for(lambda: load.results, 30, "a first prediction")
        with client(dep) as http:
            r = submit(http, promotion_policy="always", model_name="e2e-job")
            assert r.status_code == 202, r.text
            job = r.json()
            # "running" already when a worker took it before the response was written.
            assert job["status"] in ("queued", "running") and job["progress"] == "epoch 0 of 2"
            assert r.headers["location"].endswith(f"/v1/training-jobs/{job['id']}")
            assert job["config"]["architecture"] == "resnet18" and job["config"]["image_size"] == 64

            seen_running = wait_job(http, job["id"], ("running", *FINISHED), timeout=60)
            job = wait_job(http, job["id"])
            assert job["status"] == "succeeded", f"{job}\n{dep.logs()}"
            new_id = job["model_version_id"]
            assert isinstance(new_id, int) and new_id != dep.baseline_id

            # The job as the API shows it: epoch i of N, one entry per epoch, timings, host, the decision.
            assert job["progress"] == "epoch 2 of 2" and job["error"] is None
            assert [m["epoch"] for m in job["metrics"]] == [1, 2]
            assert all(m["val_accuracy"] is not None and m["duration_s"] > 0 for m in job["metrics"])
            assert job["timings"]["running_s"] > 0 and job["timings"]["mean_epoch_s"] > 0
            assert f"pid {dep.worker.pid} " in job["host"]
            assert job["promotion_decision"] == (
                f"policy 'always': promoted without comparison, replacing version {dep.baseline_id}"
            )
            assert seen_running["status"] in ("running", "succeeded")

            # Both running API processes swap to the new version without a restart.
            wait_for(
                lambda: load.models_seen()[-10:] == [new_id] * 10,
                60,
                "ten predictions in a row from the new version",
            )
            listed = http.get("/v1/training-jobs", params={"status": "succeeded"}).json()["items"]
            assert job["id"] in [j["id"] for j in listed]
    finally:
        load.stop.set()
        load.join(timeout=60)

    # Zero failed requests while the job trained, registered and was promoted.
    statuses = Counter(code for code, _ in load.results)
    assert statuses == Counter({200: len(load.results)}), f"{statuses}: {load.errors[:3]}"
    models = load.models_seen()
    assert models[0] == dep.baseline_id and models[-1] == new_id and set(models) == {dep.baseline_id, new_id}
    switch = models.index(new_id)
    assert set(models[:switch]) == {dep.baseline_id}  # nothing new before the promotion

    # The records: one metrics row per epoch, exactly one model version, one promotion with its reason.
    rows = dep.jobs.epochs(job["id"])
    assert [r.epoch for r in rows] == [1, 2]
    with dep.jobs.sessions() as s:
        versions = list(s.scalars(sa.select(ModelVersion).where(ModelVersion.training_job_id == job["id"])))
        promotion = s.scalars(sa.select(Promotion).where(Promotion.model_version_id == new_id)).one()
    assert [v.id for v in versions] == [new_id] and versions[0].is_active and versions[0].name == "e2e-job"
    assert promotion.actor == f"training job {job['id']}" and promotion.reason == job["promotion_decision"]
    print(
        f"\n{len(load.results)} predictions during the job, all 200; served {dep.baseline_id} then {new_id}"
    )


def test_cancel_during_an_epoch_takes_effect_within_seconds(deployment: Deployment) -> None:
    dep = deployment
    with client(dep) as http:
        r = submit(http, hyperparameters=dict(TINY, epochs=50), promotion_policy="always")
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        wait_for(
            lambda: http.get(f"/v1/training-jobs/{job_id}").json()["epoch"] >= 1, 120, "the first epoch", 0.1
        )
        asked = time.monotonic()
        epoch_at_cancel = http.get(f"/v1/training-jobs/{job_id}").json()["epoch"]
        r = http.post(f"/v1/training-jobs/{job_id}/cancel")
        assert r.status_code == 202, r.text  # running: requested, the worker stops it
        assert r.json()["cancel_requested"] is True
        job = wait_job(http, job_id, timeout=30)
        took = time.monotonic() - asked
        assert job["status"] == "cancelled", f"{job}\n{dep.logs()}"
        # Measured in training, not in seconds of a loaded machine: the job stopped within the epoch it
        # was in (the worker checks every few batches), so no further epoch was recorded.
        assert job["epoch"] <= epoch_at_cancel + 1, (epoch_at_cancel, job["epoch"])
        assert job["model_version_id"] is None and job["epoch"] < 50 and job["error"] is None

        # Cancelling again: the job has ended.
        again = http.post(f"/v1/training-jobs/{job_id}/cancel")
        assert again.status_code == 409 and again.json()["type"] == "urn:binwatch:problem:job-finished"
    with dep.jobs.sessions() as s:
        count = s.scalar(sa.select(sa.func.count()).where(ModelVersion.training_job_id == job_id))
    assert count == 0
    print(f"\ncancel took effect {took:.2f}s after POST /cancel (during epoch {job['epoch'] + 1})")


def test_unusable_dataset_fails_fast_with_a_readable_error(deployment: Deployment, tmp_path: Path) -> None:
    dep = deployment
    empty = tmp_path / "empty-abid"
    (empty / "bin-images").mkdir(parents=True)
    (empty / "metadata").mkdir()
    with client(dep) as http:
        for uri, expected in [
            ("/nonexistent/abid", "dataset: dataset folder /nonexistent/abid does not exist"),
            (str(empty), f"dataset: no images with metadata found in {empty}"),
        ]:
            r = submit(http, dataset={"uri": uri})
            assert r.status_code == 202, r.text
            job = wait_job(http, r.json()["id"], timeout=60)
            assert job["status"] == "failed" and job["error"] == expected, job
            # Failed fast: no epoch was trained (checked on the records, not on a clock).
            assert job["metrics"] == [] and job["model_version_id"] is None and job["epoch"] == 0

        # The same through the command line: `jobs submit --watch` exits 1 and prints the error.
        env = dict(dep.env, BINWATCH_API_URL=dep.api.url, BINWATCH_API_KEY=dep.key)
        done = subprocess.run(
            [str(BINWATCH), "jobs", "submit", "/nonexistent/abid", "--recipe", "smoke", "--watch"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "queued training job" in done.stdout and "failed" in done.stdout
        assert "dataset folder /nonexistent/abid does not exist" in done.stderr


def test_submissions_are_validated_and_need_the_train_scope(deployment: Deployment) -> None:
    dep = deployment
    with client(dep) as http:
        before = http.get("/v1/training-jobs", params={"limit": 200}).json()["items"]
        bad = submit(http, hyperparameters={"recipe": "fast"})
        assert bad.status_code == 422 and "unknown recipe 'fast'" in bad.json()["detail"]
        too_long = submit(http, hyperparameters={"recipe": "smoke", "time_limit_seconds": 10**6})
        assert too_long.status_code == 422 and "BINWATCH_JOB_TIME_LIMIT_SECONDS" in too_long.json()["detail"]
        typo = submit(http, dataset={"uri": str(ABID), "limits": 5})
        assert typo.status_code == 422 and "limits" in typo.text
        scheme = submit(http, dataset={"uri": "gs://bucket/abid"})
        assert scheme.status_code == 422 and "s3://" in scheme.text
        # Nothing was recorded for them: invalid requests never become jobs.
        assert http.get("/v1/training-jobs", params={"limit": 200}).json()["items"] == before
        assert http.get(f"/v1/training-jobs/{'0' * 32}").status_code == 404
    predict_only = create_key(dep.jobs, ["predict"])
    with httpx.Client(base_url=dep.api.url, headers={"X-API-Key": predict_only}, timeout=30) as http:
        r = submit(http)
        assert r.status_code == 403 and "'train'" in r.json()["detail"]


def test_cli_lists_shows_and_cancels(deployment: Deployment) -> None:
    dep = deployment
    env = dict(dep.env, BINWATCH_API_URL=dep.api.url, BINWATCH_API_KEY=dep.key)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BINWATCH), "jobs", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
        )

    submitted = cli("submit", str(ABID), "--recipe", "smoke", "--epochs", "40", "--limit", "96", "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    cancelled = cli("cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    with client(dep) as http:
        job = wait_job(http, job_id, timeout=30)
    assert job["status"] == "cancelled"
    shown = cli("show", job_id)
    assert shown.returncode == 0 and job_id in shown.stdout and "cancelled" in shown.stdout
    listed = json.loads(cli("list", "--json", "--limit", "50").stdout)
    assert job_id in [j["id"] for j in listed["items"]]
    watched = cli("watch", job_id)
    assert watched.returncode == 1 and "cancelled" in watched.stdout
    # Cost: this deployment prices nothing, so every job is counted as a job without a price.
    totals = json.loads(cli("cost", "--json").stdout)
    month = job["created_at"][:7]
    all_jobs = json.loads(cli("list", "--json", "--limit", "200").stdout)["items"]
    assert totals["by_month"][month]["jobs"] == sum(j["created_at"][:7] == month for j in all_jobs)
    assert totals["by_month"][month]["unpriced"] == totals["by_month"][month]["jobs"]
    assert "training cost by model version" in cli("cost").stdout
    unauthorised = subprocess.run(
        [str(BINWATCH), "jobs", "list"],
        env=dict(env, BINWATCH_API_KEY="bw_wrong"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unauthorised.returncode == 1 and "401" in unauthorised.stderr


def test_redis_stopped_means_503_predictions_continue_and_recovery_needs_no_restart(
    deployment: Deployment, tmp_path: Path
) -> None:
    dep = deployment
    broker = RedisServer(free_port(), tmp_path / "redis.log")
    broker.start()
    # A second API process of the same deployment, whose job queue is a Redis this test can stop.
    api = start_server(
        dict(
            dep.env, BINWATCH_BROKER_URL=f"redis://127.0.0.1:{broker.port}/0", BINWATCH_BROKER_KEY_PREFIX=""
        ),
        tmp_path / "logs",
    )
    try:
        api.wait_ready()
        with client(dep, api.url) as http:
            assert submit(http).status_code == 202  # the queue works: a pooled connection exists
            broker.stop()

            started = time.monotonic()
            r = submit(http)
            took = time.monotonic() - started
            assert r.status_code == 503, r.text
            problem = r.json()
            assert r.headers["content-type"].startswith("application/problem+json")
            assert problem["type"] == "urn:binwatch:problem:queue-unavailable"
            assert "job queue" in problem["detail"] and "unreachable" in problem["detail"]
            assert "was not queued" in problem["detail"] and r.headers["retry-after"] == "10"
            # Fails fast instead of waiting out kombu's default connection retries (minutes); the
            # ceiling is generous for a loaded machine.
            assert took < 20, f"the 503 took {took:.1f}s"
            # No job poses as queued: the row says why it never ran.
            lost = http.get(f"/v1/training-jobs/{problem['job_id']}").json()
            assert lost["status"] == "failed" and lost["error"].startswith(
                "not queued: the job queue at redis://"
            )

            # Predictions do not need the queue.
            photo = PHOTO.read_bytes()
            for _ in range(3):
                p = http.post("/v1/predictions", files={"images": ("bin.jpg", photo, "image/jpeg")})
                assert p.status_code == 200, p.text

            # Redis comes back (empty: no persistence): the same API process queues again.
            broker.start()
            r = submit(http)
            assert r.status_code == 202, r.text
            client_redis = redis.Redis(port=broker.port)
            try:
                assert client_redis.llen(TRAINING_QUEUE) == 1
            finally:
                client_redis.close()
        print(f"\nsubmission with Redis stopped answered 503 in {took * 1000:.0f} ms")
    finally:
        api.stop()
        broker.stop()
