"""Tuning jobs end to end (issue 12): a real API, two real `binwatch worker` processes, Postgres, Redis and
real ABID photos. Trials are training jobs the workers share; the study lives in Postgres (its optuna
schema). Faults: a worker SIGKILLed mid-trial, a cancel, two studies at once, a redelivered message.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from records.job_queue import enqueue_training
from records.orm import ModelVersion, TrainingJob, TuningJob
from tests.conftest import ABID
from tests.e2e.conftest import Deployment
from tests.worker.support import WorkerProcess, start_worker, wait_for

pytestmark = pytest.mark.slow

FINISHED = ("succeeded", "failed", "cancelled")
TINY = {"recipe": "smoke", "image_size": 64, "batch_size": 16, "epochs": 2}
GOOD_LR, BAD_LR = 0.002, 5000.0  # 5000 makes the weights non-finite within the first epoch
PHOTO = ABID / "bin-images" / "00011.jpg"


@pytest.fixture(scope="module")
def second_worker(deployment: Deployment) -> Iterator[list[WorkerProcess]]:
    """The deployment's worker plus a second one: two hosts' worth of trial runners."""
    original = deployment.worker  # stopped by the deployment fixture
    workers = [original, start_worker(deployment.env, deployment.tmp / "logs", name="worker2")]
    workers[1].wait_ready()
    yield workers
    # Tests replace a killed worker in this list: stop whatever is in it now.
    for w in workers:
        if w is not original:
            w.stop(timeout=15)


def client(dep: Deployment) -> httpx.Client:
    return httpx.Client(base_url=dep.api.url, headers={"Authorization": f"Bearer {dep.key}"}, timeout=60)


def submit(http: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("dataset", {"uri": str(ABID), "limit": 160})
    body.setdefault("hyperparameters", TINY)
    r = http.post("/v1/tuning-jobs", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def wait_tuning(http: httpx.Client, tuning_id: str, timeout: float = 420) -> dict[str, Any]:
    return wait_for(
        lambda: (
            job if (job := http.get(f"/v1/tuning-jobs/{tuning_id}").json())["status"] in FINISHED else None
        ),
        timeout,
        f"tuning job {tuning_id} to end",
        interval=0.5,
    )


def versions_of(dep: Deployment, tuning_id: str) -> list[ModelVersion]:
    with dep.jobs.sessions() as session:
        trial_ids = session.scalars(sa.select(TrainingJob.id).where(TrainingJob.tuning_job_id == tuning_id))
        return list(
            session.scalars(sa.select(ModelVersion).where(ModelVersion.training_job_id.in_(list(trial_ids))))
        )


def trial_rows(dep: Deployment, tuning_id: str) -> list[TrainingJob]:
    with dep.jobs.sessions() as session:
        return list(session.scalars(sa.select(TrainingJob).where(TrainingJob.tuning_job_id == tuning_id)))


def test_a_study_on_two_workers_prunes_a_bad_region_registers_the_best_and_serves_it(
    deployment: Deployment, second_worker: list[WorkerProcess]
) -> None:
    with client(deployment) as http:
        job = submit(
            http,
            space={"lr": {"type": "categorical", "choices": [GOOD_LR, 0.004, BAD_LR]}},
            points=[{"lr": BAD_LR}],  # the scripted bad region: tried right after the baseline
            trials=6,
            parallelism=2,
            promotion_policy="always",
        )
        assert job["status"] == "running" and job["space"]["lr"]["type"] == "categorical"
        # parallelism trial jobs queued at once (a fast worker may already have started one)
        assert job["counts"].get("queued", 0) + job["counts"].get("running", 0) == 2, job["counts"]
        assert len(trial_rows(deployment, job["id"])) == 2
        done = wait_tuning(http, job["id"])
        assert done["status"] == "succeeded", (done, deployment.logs())
        trials = done["trial_list"]
        assert len(trials) == 6
        states = [t["state"] for t in trials]
        assert "FAIL" not in states and "RUNNING" not in states, trials
        bad = [t for t in trials if t["params"]["lr"] == BAD_LR]
        assert bad and all(t["state"] == "PRUNED" for t in bad), bad
        assert any(t["baseline"] and t["params"] == {"lr": GOOD_LR} for t in trials)
        assert done["seconds_saved"] > 0  # a pruned 2-epoch trial skipped its second epoch
        # Trials really ran on both workers (two hosts' processes), two at a time.
        rows = trial_rows(deployment, job["id"])
        assert len(rows) == 6 and {r.status for r in rows} <= {"succeeded", "pruned"}
        assert len({r.host.split(" run ")[0] for r in rows if r.host}) == 2, [r.host for r in rows]
        # Per-epoch values, durations and hosts are shown for every trial.
        complete = [t for t in trials if t["state"] == "COMPLETE"]
        assert all(len(t["values"]) == 2 and t["duration_s"] and t["host"] for t in complete)
        best = max(complete, key=lambda t: t["value"])
        assert done["best_trial"] == best["number"] and done["best_value"] == pytest.approx(best["value"])
        # Exactly one version, from the best trial's job, promoted (policy always) and serving.
        versions = versions_of(deployment, job["id"])
        assert [v.id for v in versions] == [done["model_version_id"]]
        assert versions[0].training_job_id == best["training_job_id"]
        assert (
            versions[0].metrics["tuning_job"] == job["id"] and versions[0].metrics["trial"] == best["number"]
        )
        assert "policy 'always'" in done["promotion_decision"]
        served = wait_for(
            lambda: (
                r.json()
                if (
                    r := http.post(
                        "/v1/predictions", files={"images": ("bin.jpg", PHOTO.read_bytes(), "image/jpeg")}
                    )
                ).status_code
                == 200
                and r.json()["predictions"][0]["model"]["id"] == done["model_version_id"]
                else None
            ),
            60,
            "the API to serve the study's model",
            interval=0.5,
        )
        assert served["predictions"][0]["count"] >= 0
        # The pictures are served as PNG.
        assert set(done["pictures"]) == {"optimization_history.png", "param_importances.png"}
        for url in done["pictures"].values():
            r = http.get(url)
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
        # A redelivered message for a trial of the finished study does nothing.
        trial_job = rows[0]
        enqueue_training(
            deployment.jobs.celery, deployment.settings, trial_job.id, trial_job.celery_task_id or "x"
        )
        time.sleep(3)
        assert len(trial_rows(deployment, job["id"])) == 6
        assert [v.id for v in versions_of(deployment, job["id"])] == [done["model_version_id"]]
        again = http.get(f"/v1/tuning-jobs/{job['id']}").json()
        assert again["status"] == "succeeded" and again["finished_at"] == done["finished_at"]


def test_bad_spaces_get_422_naming_the_field(deployment: Deployment) -> None:
    cases = [
        ({"lr": {"type": "float", "low": 0.1, "high": 0.01}}, "lr"),
        ({"nope": {"type": "float", "low": 0.1, "high": 1}}, "nope"),
        ({"optimizer": {"type": "categorical", "choices": ["adamw"]}}, "optimizer"),
        ({"device": {"type": "categorical", "choices": ["cpu", "cuda"]}}, "device"),
        ({}, "space"),
    ]
    with client(deployment) as http:
        for space, field in cases:
            r = http.post(
                "/v1/tuning-jobs",
                json={"dataset": {"uri": str(ABID)}, "hyperparameters": TINY, "space": space},
            )
            assert r.status_code == 422, (space, r.text)
            assert r.json()["errors"][0]["loc"][-1] == field, r.json()
            assert field in r.json()["detail"] or field == "space"
        r = http.post(
            "/v1/tuning-jobs",
            json={
                "dataset": {"uri": str(ABID)},
                "space": {"lr": {"type": "float", "low": 0.001, "high": 0.01}},
                "points": [{"lr": 0.5}],
            },
        )
        assert r.status_code == 422 and "points[0] lies outside the space" in r.json()["detail"]
        assert http.get("/v1/tuning-jobs/0123abcd").status_code == 404
        with deployment.jobs.sessions() as session:
            assert (
                session.scalar(
                    sa.select(sa.func.count()).select_from(TuningJob).where(TuningJob.status == "queued")
                )
                == 0
            )


def test_a_worker_killed_mid_trial_is_retried_and_the_study_finishes_with_one_version(
    deployment: Deployment, second_worker: list[WorkerProcess]
) -> None:
    with client(deployment) as http:
        job = submit(
            http,
            hyperparameters=dict(TINY, epochs=3),
            space={"lr": {"type": "float", "low": 0.001, "high": 0.004, "log": True}},
            trials=4,
            parallelism=2,
            pruner="none",
            promotion_policy="never",
        )

        def victim() -> tuple[WorkerProcess, TrainingJob] | None:
            for row in trial_rows(deployment, job["id"]):
                if row.status == "running" and row.epoch >= 1 and row.host:
                    for w in second_worker:
                        if f"pid {w.pid} " in row.host or row.host.split(" run ")[0].endswith(f"pid {w.pid}"):
                            return w, row
            return None

        worker, row = wait_for(victim, 240, "a trial with a finished epoch on a worker we started")
        worker.kill(signal.SIGKILL)
        index = second_worker.index(worker)
        second_worker[index] = start_worker(deployment.env, deployment.tmp / "logs", name=f"worker-r{index}")
        second_worker[index].wait_ready()
        done = wait_tuning(http, job["id"])
        assert done["status"] == "succeeded", (done, deployment.logs())
        trials = done["trial_list"]
        assert len(trials) == 4 and all(t["state"] == "COMPLETE" for t in trials), trials
        killed = next(r for r in trial_rows(deployment, job["id"]) if r.id == row.id)
        # Retried, not failed: a second worker took it over and resumed after its stored epochs.
        assert killed.status == "succeeded" and killed.attempts == 2, (killed.status, killed.attempts)
        assert len(versions_of(deployment, job["id"])) == 1
        assert "policy 'never'" in done["promotion_decision"]


def test_cancel_stops_the_study_within_seconds_and_registers_nothing(
    deployment: Deployment, second_worker: list[WorkerProcess]
) -> None:
    with client(deployment) as http:
        job = submit(
            http,
            dataset={"uri": str(ABID), "limit": 400},
            hyperparameters=dict(TINY, epochs=6),
            space={"lr": {"type": "float", "low": 0.001, "high": 0.004}},
            trials=6,
            parallelism=2,
        )
        wait_for(
            lambda: sum(r.status == "running" for r in trial_rows(deployment, job["id"])) == 2,
            120,
            "both trials running",
        )
        started = time.monotonic()
        r = http.post(f"/v1/tuning-jobs/{job['id']}/cancel")
        assert r.status_code == 202 and r.json()["status"] == "cancelled"
        wait_for(
            lambda: all(row.status in FINISHED for row in trial_rows(deployment, job["id"])),
            30,
            "every trial job to stop",
        )
        assert time.monotonic() - started < 30
        time.sleep(2)
        rows = trial_rows(deployment, job["id"])
        assert len(rows) == 2 and {row.status for row in rows} == {"cancelled"}, [row.status for row in rows]
        assert versions_of(deployment, job["id"]) == []
        shown = http.get(f"/v1/tuning-jobs/{job['id']}").json()
        assert shown["status"] == "cancelled" and shown["model_version_id"] is None
        assert http.post(f"/v1/tuning-jobs/{job['id']}/cancel").status_code == 409


def test_two_studies_at_once_keep_their_trials_apart(
    deployment: Deployment, second_worker: list[WorkerProcess]
) -> None:
    with client(deployment) as http:
        a = submit(
            http,
            space={"lr": {"type": "categorical", "choices": [0.002, 0.003]}},
            trials=2,
            parallelism=1,
            promotion_policy="never",
            model_name="study-a",
        )
        b = submit(
            http,
            space={"image_size": {"type": "categorical", "choices": [48, 64]}},
            trials=2,
            parallelism=1,
            promotion_policy="never",
            model_name="study-b",
        )
        done = {j["id"]: wait_tuning(http, j["id"]) for j in (a, b)}
        for study, key in ((a, "lr"), (b, "image_size")):
            shown = done[study["id"]]
            assert shown["status"] == "succeeded", shown
            assert len(shown["trial_list"]) == 2
            assert all(set(t["params"]) == {key} for t in shown["trial_list"])
            rows = trial_rows(deployment, study["id"])
            assert len(rows) == 2 and all(r.params["tuning"]["job"] == study["id"] for r in rows)
            assert {r.trial_number for r in rows} == {0, 1}
            versions = versions_of(deployment, study["id"])
            assert len(versions) == 1 and versions[0].id == shown["model_version_id"]
        names = {done[a["id"]]["model_version_id"]: "study-a", done[b["id"]]["model_version_id"]: "study-b"}
        with deployment.jobs.sessions() as session:
            for version_id, name in names.items():
                assert session.get(ModelVersion, version_id).name == name
