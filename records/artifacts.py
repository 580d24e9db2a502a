"""Where checkpoints, plots and check images go: a local folder or an S3 bucket, behind one interface.

Keys are relative, slash-separated paths (``models/7/model.pt``). They are validated the same way for
both backends so that a key that works on a laptop works in production, and so that no key can escape
the local root folder.
"""

from __future__ import annotations

import builtins
import mimetypes
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import boto3
from botocore.exceptions import ClientError

S3_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class InvalidArtifactKey(ValueError):
    """The key is not a clean relative path (empty, absolute, backslashes, '.'/'..' segments, NUL)."""


class ArtifactNotFound(KeyError):
    """No artifact is stored under the key."""

    def __str__(self) -> str:
        # KeyError's default repr-quotes its argument, which buries the message in quotes.
        return str(self.args[0]) if self.args else ""


def _key_problem(key: object, *, allow_prefix: bool) -> str | None:
    if not isinstance(key, str):
        return f"must be a string, got {type(key).__name__}"
    if key == "":
        return None if allow_prefix else "must not be empty"
    if "\x00" in key:
        return "must not contain NUL bytes"
    if "\\" in key:
        return "must use '/' as separator, not backslashes"
    if key.startswith("/"):
        return "must be relative, not an absolute path"
    segments = key.split("/")
    if allow_prefix and segments[-1] == "":
        # A listing prefix may end at a folder boundary ("checks/").
        segments = segments[:-1]
    for segment in segments:
        if segment == "..":
            return "must not contain '..' segments"
        if segment == ".":
            return "must not contain '.' segments"
        if segment == "":
            # "a//b" is one file locally and a different object on S3; refuse it rather than diverge.
            return "must not contain empty segments ('//' or a trailing '/')"
    return None


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a clean relative path, else raise ``InvalidArtifactKey``."""
    problem = _key_problem(key, allow_prefix=False)
    if problem:
        raise InvalidArtifactKey(f"invalid artifact key {key!r}: {problem}")
    return key


def validate_prefix(prefix: str) -> str:
    """Like ``validate_key``, but the empty prefix (everything) and a trailing '/' are allowed."""
    problem = _key_problem(prefix, allow_prefix=True)
    if problem:
        raise InvalidArtifactKey(f"invalid artifact prefix {prefix!r}: {problem}")
    return prefix


@runtime_checkable
class ArtifactStore(Protocol):
    """Byte blobs under relative keys. Every method raises ``InvalidArtifactKey`` for a bad key.

    (``builtins.list`` in annotations: inside these classes, ``list`` names the method.)
    """

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Store ``data`` under ``key``, replacing what was there; readers never see a partial write."""

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at ``path`` under ``key`` (streamed; fine for multi-GB checkpoints)."""

    def get_bytes(self, key: str) -> bytes:
        """The artifact's content; ``ArtifactNotFound`` if there is none."""
        ...

    def download(self, key: str, dest: Path) -> Path:
        """Copy the artifact to the file ``dest`` (parents created) and return ``dest``."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the artifact; deleting a missing key is not an error (cleanup may be retried)."""

    def list(self, prefix: str = "") -> builtins.list[str]:
        """Sorted keys starting with ``prefix`` (a plain string prefix, as on S3)."""
        ...

    def uri(self, key: str) -> str:
        """Where the artifact lives, for people and logs: a filesystem path or ``s3://bucket/key``."""
        ...


class LocalArtifactStore:
    """Artifacts as files under ``root`` (the embedded default and the tests)."""

    # Temporary files are written here and renamed into place, so they share the root's filesystem
    # (os.replace is only atomic within one) and never show up under a key's folder.
    TMP_DIR = ".tmp"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        validate_key(key)
        if key.split("/", 1)[0] == self.TMP_DIR:
            raise InvalidArtifactKey(f"invalid artifact key {key!r}: '{self.TMP_DIR}/' is reserved")
        return self.root / key

    @contextmanager
    def _atomic_target(self, key: str) -> Iterator[IO[bytes]]:
        target = self._path(key)
        tmp_dir = self.root / self.TMP_DIR
        tmp_dir.mkdir(exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        with self._atomic_target(key) as handle:
            handle.write(data)

    def put_file(self, key: str, path: Path) -> None:
        with Path(path).open("rb") as source, self._atomic_target(key) as handle:
            shutil.copyfileobj(source, handle, length=1024 * 1024)

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise ArtifactNotFound(f"artifact {key!r} not found in {self.root}")
        return path

    def get_bytes(self, key: str) -> bytes:
        path = self._existing(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:  # deleted between the check and the read
            raise ArtifactNotFound(f"artifact {key!r} not found in {self.root}") from exc

    def download(self, key: str, dest: Path) -> Path:
        source = self._existing(key)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Copy beside dest and rename, so a crash never leaves a truncated checkpoint at dest.
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp_name)
            os.replace(tmp_name, dest)
        except FileNotFoundError as exc:
            Path(tmp_name).unlink(missing_ok=True)
            raise ArtifactNotFound(f"artifact {key!r} not found in {self.root}") from exc
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return dest

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> builtins.list[str]:
        validate_prefix(prefix)
        # Walk only the deepest folder the prefix names, not the whole store.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / folder
        if not start.is_dir():
            return []
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            if Path(dirpath) == self.root and self.TMP_DIR in dirnames:
                dirnames.remove(self.TMP_DIR)
            relative = Path(dirpath).relative_to(self.root).as_posix()
            for filename in filenames:
                key = filename if relative == "." else f"{relative}/{filename}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def uri(self, key: str) -> str:
        return str(self._path(key))


class S3ArtifactStore:
    """Artifacts as objects in ``bucket`` under ``prefix`` (AWS S3, MinIO, moto, ...)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        client: Any | None = None,
        region: str | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("S3ArtifactStore needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def __repr__(self) -> str:
        return f"S3ArtifactStore({self.uri_prefix!r})"

    @property
    def uri_prefix(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _not_found(self, key: str) -> ArtifactNotFound:
        return ArtifactNotFound(f"artifact {key!r} not found at {self.uri(key)}")

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._object_key(key), Body=data, **extra)

    def put_file(self, key: str, path: Path) -> None:
        content_type, _ = mimetypes.guess_type(str(path))
        # upload_file switches to multipart for large files and retries parts, unlike put_object.
        self.client.upload_file(
            str(path),
            self.bucket,
            self._object_key(key),
            ExtraArgs={"ContentType": content_type} if content_type else None,
        )

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as exc:
            if _is_not_found(exc):
                raise self._not_found(key) from exc
            raise
        body = response["Body"]
        try:
            return body.read()
        finally:
            body.close()

    def download(self, key: str, dest: Path) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            # download_file writes to a temporary name and renames it, so dest is never half-written.
            self.client.download_file(self.bucket, self._object_key(key), str(dest))
        except ClientError as exc:
            if _is_not_found(exc):
                raise self._not_found(key) from exc
            raise
        return dest

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as exc:
            if _is_not_found(exc):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))

    def list(self, prefix: str = "") -> builtins.list[str]:
        validate_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return sorted(keys)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"


def _is_not_found(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code")) in S3_NOT_FOUND_CODES or status == 404


def open_artifact_store(
    spec: str, endpoint_url: str | None = None, region: str = "us-east-1"
) -> ArtifactStore:
    """The store named by ``spec``: ``s3://bucket/optional/prefix`` or a local folder path.

    ``spec`` is what BINWATCH_ARTIFACT_STORE holds (``Settings.resolved_artifact_store``).
    """
    if spec.startswith("s3://"):
        bucket, _, prefix = spec[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"artifact store {spec!r} names no bucket (expected s3://bucket/prefix)")
        return S3ArtifactStore(bucket, prefix=prefix, endpoint_url=endpoint_url, region=region)
    if "://" in spec:
        raise ValueError(f"artifact store {spec!r}: only s3:// URIs and local folder paths are supported")
    return LocalArtifactStore(Path(spec))
