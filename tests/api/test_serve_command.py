"""`make run` is `binwatch serve` with nothing configured: it must work from a clean state with no other
server running (SQLite file + artifact folder under BINWATCH_HOME), migrate, print the first admin key
exactly once, serve the bundled default model from the first start (or say how to get one when it is
turned off), and serve a registered model once there is one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.api.support import REPO, clean_env, originals, run_cli, start_server

pytestmark = pytest.mark.slow

KEY = re.compile(r"bw_[A-Za-z0-9_-]{32}")


def test_make_run_invokes_binwatch_serve() -> None:
    makefile = (REPO / "Makefile").read_text()
    run_target = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "$(BIN)/binwatch serve" in run_target


def test_a_fresh_clone_counts_a_photo_with_the_bundled_model(tmp_path: Path) -> None:
    """`make run` on a fresh clone: nothing configured, empty registry -> the server installs the bundled
    default model by itself and answers POST /v1/predictions with a real count within a minute."""
    import time

    home = tmp_path / "fresh-home"
    env = clean_env(BINWATCH_HOME=str(home), BINWATCH_MODEL_POLL_SECONDS="0.5")
    started = time.monotonic()
    first = start_server(env, tmp_path / "logs")
    try:
        ready = first.wait_ready(timeout=60)
        assert ready["model"]["name"] == "bundled-default", ready
        admin = KEY.findall(first.log())[0]
        with first.client(admin) as client:
            photos = originals(3)
            response = client.post(
                "/v1/predictions", files=[("images", (p.name, p.read_bytes())) for p in photos]
            )
            assert response.status_code == 200, response.text
            answered = time.monotonic() - started
            predictions = response.json()["predictions"]
            assert len(predictions) == 3
            for pred in predictions:
                assert pred["model"]["name"] == "bundled-default"
                assert abs(sum(pred["probabilities"].values()) - 1) < 1e-3
                assert pred["label"] in pred["probabilities"]
            versions = client.get("/v1/models").json()["items"]
            assert [(v["name"], v["is_active"]) for v in versions] == [("bundled-default", True)]
        assert answered < 60, f"first count after {answered:.0f}s"
        assert "registered and promoted the bundled model" in first.log()
    finally:
        assert first.stop() in (0, -15), first.log()
    # A restart finds the version: nothing is installed twice.
    second = start_server(env, tmp_path / "logs")
    try:
        assert second.wait_ready(timeout=60)["model"]["name"] == "bundled-default"
        with second.client(admin) as client:
            assert len(client.get("/v1/models").json()["items"]) == 1
        assert "registered and promoted the bundled model" not in second.log()
    finally:
        second.stop()


def test_serve_from_a_clean_state(tmp_path: Path, checkpoints: tuple[Path, Path]) -> None:
    home = tmp_path / "fresh-home"
    # Only BINWATCH_HOME: no database URL, no artifact store, no broker: the embedded default, here without
    # the bundled model, as a deployment that turned it off sees it.
    env = clean_env(
        BINWATCH_HOME=str(home), BINWATCH_MODEL_POLL_SECONDS="0.5", BINWATCH_INSTALL_BUNDLED_MODEL="false"
    )

    first = start_server(env, tmp_path / "logs")
    try:
        with first.client() as client:
            assert client.get("/healthz").json() == {"status": "alive"}
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.headers["content-type"] == "application/problem+json"
            assert "binwatch models install-default" in ready.json()["detail"]
            assert "binwatch models register" in ready.json()["detail"]
            assert "--promote" in ready.json()["detail"]
        keys = KEY.findall(first.log())
        assert keys, first.log()
        admin = keys[0]
        assert set(keys) == {admin}, "one admin key, printed (in the banner and the curl hint) once"
        with first.client(admin) as client:
            no_model = client.post(
                "/v1/predictions", files={"images": ("a.jpg", originals(1)[0].read_bytes())}
            )
            assert no_model.status_code == 503 and "binwatch models register" in no_model.json()["detail"]
            assert client.get("/v1/models").json() == {"items": [], "next_cursor": None}
    finally:
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it: exit status -SIGTERM.
        assert first.stop() in (0, -15), first.log()
        assert "Application shutdown complete" in first.log()
    assert (home / "binwatch.db").is_file()

    second = start_server(env, tmp_path / "logs")
    try:
        with second.client(admin) as client:
            assert client.get("/v1/models").status_code == 200, "the first key still works"
        assert not KEY.search(second.log()), "the admin key is printed on the first start only"
    finally:
        second.stop()

    registered = run_cli("models", "register", str(checkpoints[0]), "--promote", env=env)
    assert "is now active" in registered.stdout
    assert (home / "artifacts" / "models").is_dir()

    third = start_server(env, tmp_path / "logs")
    try:
        ready = third.wait_ready()
        assert ready["model"]["name"] == "tiny-seed1"
        with third.client(admin) as client:
            response = client.post(
                "/v1/predictions", files={"images": ("a.jpg", originals(1)[0].read_bytes())}
            )
            assert response.status_code == 200, response.text
        assert (home / "model-cache" / f"{ready['model']['sha256']}.pt").is_file()
    finally:
        third.stop()


# kombu's SQLAlchemy transport uses a loader option SQLAlchemy 2.1 deprecates; harmless here.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_make_run_gives_a_working_training_worker(tmp_path: Path) -> None:
    """`make run` is `binwatch serve --with-worker`: with nothing configured, a job submitted over HTTP is
    trained by a real worker process through the embedded (SQLite) broker, and the API then serves it."""
    import time

    makefile = (REPO / "Makefile").read_text()
    assert "binwatch serve --with-worker" in makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    home = tmp_path / "home"
    env = clean_env(BINWATCH_HOME=str(home), BINWATCH_MODEL_POLL_SECONDS="0.5", OMP_NUM_THREADS="1")
    server = start_server(env, tmp_path / "logs", args=("--with-worker",))
    try:
        admin = KEY.findall(server.log())[0]
        with server.client(admin) as client:
            body = {
                "dataset": {"uri": str(REPO.parent / "shared" / "abid"), "limit": 48},
                "hyperparameters": {"recipe": "smoke", "epochs": 1, "image_size": 64},
                "promotion_policy": "always",
            }
            submitted = client.post("/v1/training-jobs", json=body)
            assert submitted.status_code == 202, submitted.text
            job_id = submitted.json()["id"]
            deadline = time.monotonic() + 240
            job = submitted.json()
            while time.monotonic() < deadline and job["status"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(1)
                job = client.get(f"/v1/training-jobs/{job_id}").json()
            assert job["status"] == "succeeded", f"{job}\n{server.log()}"
            assert job["model_version_id"] is not None
            # The bundled model served until now; the API swaps to the job's version at its next poll.
            deadline = time.monotonic() + 60
            ready = server.wait_ready(timeout=60)
            while ready["model"]["id"] != job["model_version_id"] and time.monotonic() < deadline:
                time.sleep(0.5)
                ready = server.wait_ready(timeout=60)
            assert ready["model"]["id"] == job["model_version_id"], ready
            photo = originals(1)[0].read_bytes()
            counted = client.post("/v1/predictions", files={"images": ("a.jpg", photo)})
            assert counted.status_code == 200, counted.text
            assert counted.json()["predictions"][0]["model"]["id"] == job["model_version_id"]
    finally:
        server.stop()
    worker_pid = int(re.search(r"training worker started \(pid (\d+)\)", server.log()).group(1))
    deadline = time.monotonic() + 60
    while Path(f"/proc/{worker_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    status = Path(f"/proc/{worker_pid}/status")
    assert not status.exists() or "zombie" in status.read_text(), "the worker outlived `binwatch serve`"
    assert (home / "broker.db").is_file()
