"""The deployment as docker compose runs it, with the artifact store on S3: Postgres, Redis, a real
`binwatch serve`, a real `binwatch worker`, and a moto_server bucket for checkpoints, plots and check
photos. A job submitted over HTTP trains, stores its model in the bucket, is promoted, and the API serves
it; a check's photo goes to the bucket and comes back byte for byte. Nothing is written to local folders."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from records import model_versions
from records.migrate import upgrade_database
from tests.api.support import start_server, tiny_checkpoint
from tests.e2e.conftest import create_key, register_baseline
from tests.e2e.test_training_jobs import PHOTO, submit, wait_job
from tests.worker.support import (
    Jobs,
    delete_redis_prefix,
    settings_from_env,
    start_worker,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_deployment(
    pg_url: str,
    redis_url: str,
    moto_endpoint: str,
    s3_bucket: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[httpx.Client, Jobs, int, str, Path]]:
    upgrade_database(pg_url)
    prefix = f"bws3-{uuid.uuid4().hex[:10]}:"
    env = worker_env(
        database_url=pg_url,
        broker_url=f"{redis_url}/0",
        home=tmp_path / "home",
        artifacts=f"s3://{s3_bucket}/bw",
        key_prefix=prefix,
        BINWATCH_S3_ENDPOINT_URL=moto_endpoint,
    )
    settings = settings_from_env(env)
    helper = Jobs(settings)
    baseline = register_baseline(helper, tiny_checkpoint(tmp_path_factory.getbasetemp() / "checkpoints", 11))
    key = create_key(helper, ["predict", "train", "inventory"])
    api = start_server(env, tmp_path / "logs")
    worker = start_worker(env, tmp_path / "logs")
    try:
        api.wait_ready()
        worker.wait_ready()
        with httpx.Client(base_url=api.url, headers={"X-API-Key": key}, timeout=60) as http:
            yield http, helper, baseline, s3_bucket, tmp_path / "home"
    finally:
        worker.stop(timeout=15)
        api.stop()
        helper.close()
        delete_redis_prefix(redis_url, prefix)


def test_train_promote_serve_and_check_with_artifacts_on_s3(
    s3_deployment: tuple[httpx.Client, Jobs, int, str, Path], moto_endpoint: str
) -> None:
    http, helper, baseline, bucket, home = s3_deployment
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")

    def keys(prefix: str) -> list[str]:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"bw/{prefix}")
        return [o["Key"] for o in listed.get("Contents", [])]

    created = submit(http, promotion_policy="always", model_name="on-s3")
    assert created.status_code == 202, created.text
    job = wait_job(http, created.json()["id"])
    assert job["status"] == "succeeded", job
    new_id = job["model_version_id"]
    assert new_id != baseline

    detail = http.get(f"/v1/models/{new_id}").json()
    assert detail["is_active"]
    with helper.sessions() as session:
        artifact_key = model_versions.get_version(session, new_id).artifact_key
    assert f"bw/{artifact_key}" in keys("models/"), keys("models/")

    def serves_new() -> bool:
        r = http.post("/v1/predictions", files={"images": ("bin.jpg", PHOTO.read_bytes(), "image/jpeg")})
        return r.status_code == 200 and r.json()["predictions"][0]["model"]["id"] == new_id

    wait_for(serves_new, 60, "the API serving the version trained on S3")

    bin_id = PHOTO.stem
    assert http.put(f"/v1/bins/{bin_id}", json={"expected_count": 2}).status_code in (200, 201)
    check = http.post(
        f"/v1/bins/{bin_id}/checks", files={"image": (PHOTO.name, PHOTO.read_bytes(), "image/jpeg")}
    )
    assert check.status_code == 201, check.text
    assert len(keys(f"checks/{bin_id}/")) == 1
    image = http.get(check.json()["image_url"])
    assert image.status_code == 200 and image.content == PHOTO.read_bytes()
    # Everything went to the bucket: no local artifact folder appeared on the embedded default's path.
    assert not (home / "artifacts").exists()
