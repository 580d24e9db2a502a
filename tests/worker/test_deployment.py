"""docker-compose.yml, the Dockerfile and the deployment docs agree with the code.

No Docker engine runs here. `docker compose config` validates the file where the compose plugin exists;
everywhere, the file is parsed with PyYAML and checked for what compose would refuse or what would fail only
when the stack starts: interpolation defaults, build contexts, Settings values that must parse, binwatch
commands that must exist, dependencies and their conditions, named volumes, ports, durations.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from settings import Settings
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment must be a mapping (so the shared block can be merged in)"
    return {k: str(v) for k, v in env.items()}


INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?-([^}]*))?\}")
DURATION = re.compile(r"^\d+(ms|s|m|h)$")
PORT = re.compile(r"^(?:(?:\d{1,3}\.){3}\d{1,3}:)?(?:\d+|\$\{[A-Z_]+:-\d+\}):\d+$")


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with the defaults (an empty environment), as `docker compose config` does."""
    assert "${" not in INTERPOLATION.sub("", value), f"malformed interpolation in {value!r}"
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def test_compose_file_is_valid_without_docker(compose: dict[str, Any]) -> None:
    """What `docker compose config` would refuse, and what would only fail when the stack starts."""
    services, volumes = compose["services"], set(compose.get("volumes") or {})
    text = COMPOSE.read_text()
    # Every ${VAR} has a default, so the file works with no .env (the README's one-command start).
    for match in INTERPOLATION.finditer(text):
        assert match.group(2) is not None, f"${{{match.group(1)}}} has no default"
    used_volumes: set[str] = set()
    for name, service in services.items():
        assert set(service) <= {
            "image",
            "build",
            "command",
            "entrypoint",
            "environment",
            "volumes",
            "ports",
            "healthcheck",
            "restart",
            "depends_on",
            "shm_size",
            "stop_grace_period",
            "deploy",
        }, f"{name}: unexpected keys {set(service)}"
        assert "image" in service or "build" in service, f"{name} has neither image nor build"
        if "build" in service:
            context = REPO / (
                service["build"] if isinstance(service["build"], str) else service["build"]["context"]
            )
            assert (context / "Dockerfile").is_file(), f"{name}: no Dockerfile in {context}"
        # Settings values must parse as the service will read them (types, ranges, validators).
        env = {k: interpolate(v) for k, v in env_of(service).items()}
        binwatch = {k[len("BINWATCH_") :].lower(): v for k, v in env.items() if k.startswith("BINWATCH_")}
        if binwatch:
            Settings(_env_file=None, **binwatch)  # type: ignore[arg-type]
        command = service.get("command")
        if isinstance(command, list) and command[:1] == ["binwatch"]:
            done = subprocess.run(
                [str(Path(sys.executable).with_name("binwatch")), *command[1:2], "--help"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"{name}: `{' '.join(command)}` is not a binwatch command"
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            condition = spec["condition"]
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert services[dependency].get("healthcheck"), f"{dependency} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} would never complete"
        for mount in service.get("volumes") or []:
            source = interpolate(mount).split(":")[0]
            if not source.startswith((".", "/")):
                used_volumes.add(source)
        for port in service.get("ports") or []:
            assert PORT.match(port), f"{name}: port {port!r}"
        for key in ("interval", "timeout", "start_period"):
            if key in (service.get("healthcheck") or {}):
                assert DURATION.match(service["healthcheck"][key]), f"{name}: healthcheck {key}"
        assert service.get("restart", "no") in ("no", "always", "on-failure", "unless-stopped")
    assert used_volumes == volumes, f"named volumes used {used_volumes} but declared {volumes}"
    # Where the compose plugin exists, compose's own validation too.
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        result = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr


def test_services_have_healthchecks_and_wait_for_their_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "minio", "api", "worker"} <= set(services)
    for name in ("postgres", "redis", "minio", "api", "worker"):
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["minio-init"]["condition"] == "service_completed_successfully"
    assert set(compose["volumes"]) >= {"pgdata", "redisdata", "miniodata"}
    assert "appendonly" in " ".join(services["redis"]["command"])  # queued jobs survive a Redis restart


def test_worker_runs_the_documented_command_on_a_gpu(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["command"] == ["binwatch", "worker"]
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    env = env_of(worker)
    assert env["BINWATCH_WORKER_QUEUES"] == "training" and env["BINWATCH_WORKER_POOL"] == "solo"
    # The healthcheck must not be `celery inspect ping`: a solo worker busy training cannot answer it.
    assert "inspect" not in " ".join(worker["healthcheck"]["test"])
    assert "binwatch worker" in (REPO / "docs" / "deployment.md").read_text()


def test_api_and_worker_share_one_configuration(compose: dict[str, Any]) -> None:
    api, worker = (env_of(compose["services"][n]) for n in ("api", "worker"))
    shared = (
        "BINWATCH_DATABASE_URL",
        "BINWATCH_BROKER_URL",
        "BINWATCH_ARTIFACT_STORE",
        "BINWATCH_S3_ENDPOINT_URL",
        "BINWATCH_BROKER_VISIBILITY_TIMEOUT",
        "BINWATCH_JOB_TIME_LIMIT_SECONDS",
    )
    for key in shared:
        assert api[key] == worker[key], key
    assert (
        api["BINWATCH_DATABASE_URL"].startswith("postgresql+psycopg://")
        and "@postgres:5432/" in api["BINWATCH_DATABASE_URL"]
    )
    assert api["BINWATCH_BROKER_URL"].startswith("redis://redis:6379/")
    assert (
        api["BINWATCH_ARTIFACT_STORE"].startswith("s3://")
        and api["BINWATCH_S3_ENDPOINT_URL"] == "http://minio:9000"
    )
    # Every BINWATCH_* variable is a real setting (a typo would be ignored silently at runtime).
    fields = set(Settings.model_fields)
    for env in (api, worker):
        for key in env:
            if key.startswith("BINWATCH_"):
                assert key[len("BINWATCH_") :].lower() in fields, f"{key} is not a binwatch setting"


def test_visibility_timeout_outlasts_the_longest_job(compose: dict[str, Any]) -> None:
    env = env_of(compose["services"]["worker"])
    hard = int(env["BINWATCH_JOB_TIME_LIMIT_SECONDS"]) + int(env["BINWATCH_JOB_TIME_LIMIT_GRACE_SECONDS"])
    assert int(env["BINWATCH_BROKER_VISIBILITY_TIMEOUT"]) > hard


def test_dockerfile_installs_the_pinned_cuda_torch_and_runs_unprivileged() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert "-c constraints.txt" in text  # torch==2.14.1 with its nvidia-* CUDA wheels, as pinned
    assert "torch==2.14.1" in (REPO / "constraints.txt").read_text()
    assert re.search(r"^USER (?!root)", text, re.M)
    assert "tini" in text  # SIGTERM reaches the worker, which requeues its job
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", "data/", "var/"} <= set(ignored)


def test_deployment_doc_gives_the_exact_remote_worker_command() -> None:
    docs = (REPO / "docs" / "deployment.md").read_text()
    for needle in (
        "BINWATCH_DATABASE_URL",
        "BINWATCH_BROKER_URL",
        "BINWATCH_ARTIFACT_STORE",
        "--gpus",
        "binwatch worker",
    ):
        assert needle in docs, needle
