"""The API with its artifact store on S3 (a real moto_server): checkpoints and check photos go there, the
model manager downloads and verifies from there, and a missing checkpoint is refused on promotion."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from tests.api.conftest import Service
from tests.api.support import originals

pytestmark = pytest.mark.slow


def test_checkpoints_and_check_photos_live_in_s3(
    make_service: Callable[..., Service],
    checkpoints: tuple[Path, Path],
    moto_endpoint: str,
    s3_bucket: str,
) -> None:
    svc = make_service(artifact_store=f"s3://{s3_bucket}/binwatch", s3_endpoint_url=moto_endpoint)
    first = svc.register(checkpoints[0])
    second = svc.register(checkpoints[1], promote=False)
    assert first.artifact_uri == f"s3://{s3_bucket}/binwatch/models/{first.sha256}/model.pt"
    svc.wait_serving(first.id)
    assert (svc.settings.model_cache_dir / f"{first.sha256}.pt").is_file()

    c, h = svc.client, svc.headers()
    data = originals(1)[0].read_bytes()
    c.put("/v1/bins/b1", headers=h, json={"expected_count": 2})
    check = c.post("/v1/bins/b1/checks", headers=h, files={"image": ("b1.jpg", data, "image/jpeg")})
    assert check.status_code == 201, check.text
    assert c.get(check.json()["image_url"], headers=h).content == data

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="binwatch/")["Contents"]}
    assert f"binwatch/models/{first.sha256}/model.pt" in keys
    assert f"binwatch/models/{first.sha256}/model.json" in keys
    assert f"binwatch/models/{first.sha256}/confusion_matrix.png" in keys
    photos = [k for k in keys if k.startswith("binwatch/checks/b1/")]
    assert len(photos) == 1 and photos[0].endswith(".jpg")
    assert s3.get_object(Bucket=s3_bucket, Key=photos[0])["ContentType"] == "image/jpeg"

    # A version whose checkpoint vanished from the bucket is refused, and the served model stays.
    s3.delete_object(Bucket=s3_bucket, Key=f"binwatch/models/{second.sha256}/model.pt")
    refused = c.post(f"/v1/models/{second.id}/promote", headers=h)
    assert refused.status_code == 409, refused.text
    assert "missing from the artifact store" in refused.json()["detail"]
    assert c.get("/readyz").json()["model"]["id"] == first.id
