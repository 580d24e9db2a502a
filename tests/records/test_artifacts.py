"""Both artifact stores behave the same: the same test body runs on a folder and on a real moto_server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import boto3
import pytest

from records.artifacts import (
    ArtifactNotFound,
    ArtifactStore,
    InvalidArtifactKey,
    LocalArtifactStore,
    S3ArtifactStore,
    open_artifact_store,
    validate_key,
)

S3_PREFIX = "binwatch/test"
BAD_KEYS = ["../x", "/abs", "a/../b", "", "a\\b", "a\x00b", "a//b", "a/./b", "a/"]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return S3ArtifactStore(bucket, prefix=S3_PREFIX, endpoint_url=endpoint, region="us-east-1")


def test_put_get_list_download_delete(store: ArtifactStore, tmp_path: Path) -> None:
    assert isinstance(store, ArtifactStore)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"\x80weights" * 1000)

    store.put_bytes("checks/00121/1.jpg", b"\xff\xd8jpeg", content_type="image/jpeg")
    store.put_bytes("checks/121/1.jpg", b"other bin")
    store.put_file("models/7/model.pt", checkpoint)
    store.put_bytes("models/7/plots/confusion_matrix.png", b"png")

    assert store.get_bytes("checks/00121/1.jpg") == b"\xff\xd8jpeg"
    assert store.get_bytes("models/7/model.pt") == checkpoint.read_bytes()
    assert store.exists("checks/121/1.jpg")
    assert not store.exists("checks/121/2.jpg")
    assert not store.exists("checks")  # a folder is not an artifact

    everything = [
        "checks/00121/1.jpg",
        "checks/121/1.jpg",
        "models/7/model.pt",
        "models/7/plots/confusion_matrix.png",
    ]
    assert store.list() == everything
    assert store.list("") == everything
    assert store.list("models/") == everything[2:]
    assert store.list("checks/001") == ["checks/00121/1.jpg"]  # a string prefix, as on S3
    assert store.list("mod") == everything[2:]
    assert store.list("nothing/") == []

    dest = tmp_path / "downloads" / "nested" / "model.pt"
    assert store.download("models/7/model.pt", dest) == dest
    assert dest.read_bytes() == checkpoint.read_bytes()

    store.put_bytes("checks/121/1.jpg", b"replaced")
    assert store.get_bytes("checks/121/1.jpg") == b"replaced"

    store.delete("checks/121/1.jpg")
    assert not store.exists("checks/121/1.jpg")
    store.delete("checks/121/1.jpg")  # deleting twice is fine: cleanup may be retried
    assert store.list("checks/") == ["checks/00121/1.jpg"]


def test_missing_keys_raise_artifact_not_found_naming_the_key(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound, match="models/404/model.pt") as info:
        store.get_bytes("models/404/model.pt")
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("artifact 'models/404/model.pt' not found")

    dest = tmp_path / "dl" / "model.pt"
    with pytest.raises(ArtifactNotFound, match="models/404/model.pt"):
        store.download("models/404/model.pt", dest)
    assert not dest.exists()


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys_are_rejected_by_every_method(store: ArtifactStore, key: str, tmp_path: Path) -> None:
    source = tmp_path / "f.bin"
    source.write_bytes(b"x")
    calls = {
        "put_bytes": lambda: store.put_bytes(key, b"x"),
        "put_file": lambda: store.put_file(key, source),
        "get_bytes": lambda: store.get_bytes(key),
        "download": lambda: store.download(key, tmp_path / "out.bin"),
        "exists": lambda: store.exists(key),
        "delete": lambda: store.delete(key),
        "uri": lambda: store.uri(key),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidArtifactKey, match="invalid artifact key"):
            call()
            pytest.fail(f"{name} accepted {key!r}")
    assert store.list() == []


@pytest.mark.parametrize("prefix", ["../x", "/abs", "a/../b", "a\\b", "a//b"], ids=repr)
def test_bad_list_prefixes_are_rejected(store: ArtifactStore, prefix: str) -> None:
    with pytest.raises(InvalidArtifactKey, match="invalid artifact prefix"):
        store.list(prefix)


def test_validate_key_explains_the_problem() -> None:
    assert validate_key("models/7/model.pt") == "models/7/model.pt"
    with pytest.raises(InvalidArtifactKey, match="'..' segments"):
        validate_key("a/../b")
    with pytest.raises(InvalidArtifactKey, match="relative"):
        validate_key("/etc/passwd")
    with pytest.raises(InvalidArtifactKey, match="backslash"):
        validate_key("a\\b")
    with pytest.raises(InvalidArtifactKey, match="empty"):
        validate_key("")
    with pytest.raises(InvalidArtifactKey, match="NUL"):
        validate_key("a\x00")
    assert issubclass(InvalidArtifactKey, ValueError)


def test_local_store_leaves_no_partial_files(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    store.put_bytes("a/b.bin", b"x")
    with pytest.raises(FileNotFoundError):
        store.put_file("a/c.bin", tmp_path / "missing.bin")
    assert not store.exists("a/c.bin")
    assert list((store.root / LocalArtifactStore.TMP_DIR).iterdir()) == []
    assert store.list() == ["a/b.bin"]
    assert store.uri("a/b.bin") == str(tmp_path / "artifacts" / "a" / "b.bin")
    with pytest.raises(InvalidArtifactKey, match="reserved"):
        store.put_bytes(".tmp/x", b"x")


def test_s3_store_keeps_everything_under_its_prefix(moto_endpoint: str, s3_bucket: str) -> None:
    store = S3ArtifactStore(
        s3_bucket, prefix=f"/{S3_PREFIX}/", endpoint_url=moto_endpoint, region="us-east-1"
    )
    store.put_bytes("checks/1.jpg", b"jpeg", content_type="image/jpeg")
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    head = client.head_object(Bucket=s3_bucket, Key=f"{S3_PREFIX}/checks/1.jpg")
    assert head["ContentType"] == "image/jpeg"
    assert store.uri("checks/1.jpg") == f"s3://{s3_bucket}/{S3_PREFIX}/checks/1.jpg"

    # An object beside the prefix ("binwatch/testing/...") is not under "binwatch/test/".
    client.put_object(Bucket=s3_bucket, Key=f"{S3_PREFIX}ing/other.bin", Body=b"x")
    assert store.list() == ["checks/1.jpg"]

    unprefixed = S3ArtifactStore(s3_bucket, endpoint_url=moto_endpoint, region="us-east-1")
    assert unprefixed.list() == [f"{S3_PREFIX}/checks/1.jpg", f"{S3_PREFIX}ing/other.bin"]
    assert unprefixed.get_bytes(f"{S3_PREFIX}/checks/1.jpg") == b"jpeg"


@pytest.mark.slow
def test_s3_store_roundtrips_a_multipart_sized_file(
    moto_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    store = S3ArtifactStore(s3_bucket, prefix=S3_PREFIX, endpoint_url=moto_endpoint, region="us-east-1")
    source = tmp_path / "model.pt"
    # 10 MB is above boto3's 8 MB multipart threshold, so upload_file takes the multipart path.
    source.write_bytes(os.urandom(10 * 1024 * 1024))
    expected = hashlib.sha256(source.read_bytes()).hexdigest()

    store.put_file("models/big/model.pt", source)
    dest = store.download("models/big/model.pt", tmp_path / "back" / "model.pt")

    assert hashlib.sha256(dest.read_bytes()).hexdigest() == expected
    assert hashlib.sha256(store.get_bytes("models/big/model.pt")).hexdigest() == expected


def test_open_artifact_store_picks_the_backend(tmp_path: Path, moto_endpoint: str, s3_bucket: str) -> None:
    s3 = open_artifact_store(f"s3://{s3_bucket}/runs/prod", endpoint_url=moto_endpoint)
    assert isinstance(s3, S3ArtifactStore)
    assert (s3.bucket, s3.prefix) == (s3_bucket, "runs/prod")
    s3.put_bytes("x.txt", b"hello")
    assert s3.uri("x.txt") == f"s3://{s3_bucket}/runs/prod/x.txt"
    assert s3.get_bytes("x.txt") == b"hello"

    bare = open_artifact_store(f"s3://{s3_bucket}", endpoint_url=moto_endpoint)
    assert isinstance(bare, S3ArtifactStore) and bare.prefix == ""
    assert bare.list() == ["runs/prod/x.txt"]

    local = open_artifact_store(str(tmp_path / "store"))
    assert isinstance(local, LocalArtifactStore)
    assert local.root == (tmp_path / "store").resolve() and local.root.is_dir()

    with pytest.raises(ValueError, match="names no bucket"):
        open_artifact_store("s3://")
    with pytest.raises(ValueError, match="only s3://"):
        open_artifact_store("gs://bucket/prefix")
