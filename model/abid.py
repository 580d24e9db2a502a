"""The Amazon Bin Image Dataset as the public bucket lays it out.

``<root>/bin-images/<id>.jpg`` holds the photo and ``<root>/metadata/<id>.json`` its metadata, whose
``EXPECTED_QUANTITY`` is the number of objects in the bin. The root is a local folder or an S3 URI
(``s3://aft-vbi-pds/`` is the public bucket, read unsigned). Ids are strings: ``00121`` and ``121`` differ.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

PUBLIC_BUCKET_URI = "s3://aft-vbi-pds/"
IMAGE_DIR = "bin-images"
METADATA_DIR = "metadata"
MANIFEST = "manifest.csv"


class DatasetError(RuntimeError):
    """The dataset is missing, empty or malformed; the message says which file and what to fix."""


class MissingObjectError(DatasetError):
    """One file/object of the layout does not exist (as opposed to the store being unreadable)."""


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


class ObjectStream(NamedTuple):
    """An open object of the store: its bytes as a stream (close it when done) and its size in bytes."""

    body: Readable
    size: int


@dataclass(frozen=True)
class BinRecord:
    """One bin photo and its recorded object count."""

    id: str
    count: int
    split: str | None = None
    # Which of several datasets trained on together it came from (model/datasets.py); 0 for the first.
    dataset: int = 0


def count_from_metadata(meta: dict[str, Any], where: str = "metadata") -> int:
    """The bin's object count: ABID's ``EXPECTED_QUANTITY``."""
    if "EXPECTED_QUANTITY" not in meta:
        raise DatasetError(f"{where}: no EXPECTED_QUANTITY field (is this an ABID metadata json?)")
    value = meta["EXPECTED_QUANTITY"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DatasetError(f"{where}: EXPECTED_QUANTITY must be a non-negative integer, got {value!r}")
    return value


class Source(Protocol):
    """Read access to an ABID-layout store."""

    uri: str

    def list_ids(self) -> list[str]: ...
    def read_metadata(self, bin_id: str) -> dict[str, Any]: ...
    def read_image(self, bin_id: str) -> bytes: ...
    def read_manifest(self) -> list[dict[str, str]] | None: ...
    def probe(self) -> None: ...
    def object_size(self, folder: str, name: str) -> int | None: ...
    def object_sizes(self, folder: str) -> dict[str, int]: ...
    def open_object(self, folder: str, name: str) -> ObjectStream: ...


class LocalSource:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.uri = str(self.root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder {self.root} does not exist")

    def image_path(self, bin_id: str) -> Path:
        return self.root / IMAGE_DIR / f"{bin_id}.jpg"

    def list_ids(self) -> list[str]:
        meta_dir = self.root / METADATA_DIR
        img_dir = self.root / IMAGE_DIR
        if not meta_dir.is_dir() or not img_dir.is_dir():
            raise DatasetError(
                f"{self.root} is not in ABID layout: "
                f"expected folders {IMAGE_DIR}/ and {METADATA_DIR}/ inside it"
            )
        with os.scandir(img_dir) as it:
            images = {e.name[:-4] for e in it if e.name.endswith(".jpg")}
        with os.scandir(meta_dir) as it:
            metas = {e.name[:-5] for e in it if e.name.endswith(".json")}
        return sorted(images & metas)

    def read_metadata(self, bin_id: str) -> dict[str, Any]:
        path = self.root / METADATA_DIR / f"{bin_id}.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise DatasetError(f"{path} does not exist") from exc
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} is not valid JSON: {exc}") from exc

    def read_image(self, bin_id: str) -> bytes:
        path = self.image_path(bin_id)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise DatasetError(f"{path} does not exist") from exc

    def read_manifest(self) -> list[dict[str, str]] | None:
        path = self.root / MANIFEST
        if not path.is_file():
            return None
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))

    def probe(self) -> None:
        """Raise DatasetError unless the folder has the ABID layout (both sub-folders)."""
        missing = [d for d in (IMAGE_DIR, METADATA_DIR) if not (self.root / d).is_dir()]
        if missing:
            raise DatasetError(
                f"{self.root} is not in ABID layout: no {' or '.join(d + '/' for d in missing)} folder in it"
            )

    def object_size(self, folder: str, name: str) -> int | None:
        """Size in bytes of ``<root>/<folder>/<name>``, None when it does not exist."""
        try:
            return (self.root / folder / name).stat().st_size
        except FileNotFoundError:
            return None

    def object_sizes(self, folder: str) -> dict[str, int]:
        """{name: size} of every file directly inside ``<root>/<folder>/``."""
        try:
            with os.scandir(self.root / folder) as it:
                return {e.name: e.stat().st_size for e in it if e.is_file()}
        except FileNotFoundError as exc:
            raise DatasetError(f"{self.root / folder} does not exist") from exc

    def open_object(self, folder: str, name: str) -> ObjectStream:
        path = self.root / folder / name
        try:
            fh = path.open("rb")
        except FileNotFoundError as exc:
            raise MissingObjectError(f"{path} does not exist") from exc
        return ObjectStream(fh, os.fstat(fh.fileno()).st_size)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix/``)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI: {uri!r} (expected s3://bucket/prefix)")
    rest = uri[5:]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"S3 URI {uri!r} has no bucket name")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def make_s3_client(
    endpoint_url: str | None = None, unsigned: bool | None = None, region: str | None = None
) -> Any:
    """A boto3 S3 client. Unsigned (anonymous) when asked, which the public ABID bucket needs."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(
        signature_version=UNSIGNED if unsigned else None,
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=64,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config, region_name=region or "us-east-1")


def describe_s3_error(exc: BaseException) -> str:
    """What went wrong with an S3 request, without anything the server wrote.

    botocore's ``ClientError`` messages quote the error document the endpoint sent back; a dataset
    endpoint is chosen per job, so its text must not travel into job errors (which clients read): only
    the HTTP status and a sanitised error code are kept. Other botocore errors (cannot connect, timed
    out, no credentials) are written by botocore itself and name at most the endpoint the caller gave.
    """
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        response = exc.response if isinstance(exc.response, dict) else {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        code = re.sub(r"[^A-Za-z0-9.]", "", str(response.get("Error", {}).get("Code", "")))[:64]
        return f"{exc.operation_name} answered HTTP {status} ({code or 'no error code'})"
    return str(exc)


class S3Source:
    def __init__(
        self,
        uri: str = PUBLIC_BUCKET_URI,
        endpoint_url: str | None = None,
        unsigned: bool | None = None,
        client: Any = None,
    ) -> None:
        self.uri = uri
        self.bucket, self.prefix = parse_s3_uri(uri)
        if unsigned is None:
            # The public bucket is read anonymously; anything else uses the caller's credentials.
            unsigned = self.bucket == "aft-vbi-pds" and endpoint_url is None
        self.client = client or make_s3_client(endpoint_url, unsigned)

    def key(self, folder: str, name: str) -> str:
        return f"{self.prefix}{folder}/{name}"

    def list_keys(self, folder: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under ``<prefix><folder>/``."""
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(folder, "")):
                for obj in page.get("Contents", []):
                    yield obj["Key"], int(obj["Size"])
        except (ClientError, BotoCoreError) as exc:
            raise DatasetError(f"cannot list {self.uri}{folder}/: {describe_s3_error(exc)}") from exc

    def list_ids(self) -> list[str]:
        images = {Path(k).stem for k, _ in self.list_keys(IMAGE_DIR) if k.endswith(".jpg")}
        metas = {Path(k).stem for k, _ in self.list_keys(METADATA_DIR) if k.endswith(".json")}
        return sorted(images & metas)

    def get(self, key: str) -> bytes:
        stream = self._open(key)
        try:
            return stream.body.read()
        finally:
            stream.body.close()

    def _open(self, key: str) -> ObjectStream:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.NoSuchKey as exc:
            raise MissingObjectError(f"s3://{self.bucket}/{key} does not exist") from exc
        except (ClientError, BotoCoreError) as exc:
            raise DatasetError(f"cannot read s3://{self.bucket}/{key}: {describe_s3_error(exc)}") from exc
        return ObjectStream(resp["Body"], int(resp["ContentLength"]))

    def probe(self) -> None:
        """Fail fast, with one clear message, when the bucket cannot be reached at all."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "AccessDenied":
                # Some policies grant GetObject without ListBucket; the reads themselves will tell.
                return
            if code == "NoSuchBucket":
                raise DatasetError(f"bucket {self.bucket!r} does not exist ({self.uri})") from exc
            raise DatasetError(f"cannot list {self.uri}: {describe_s3_error(exc)}") from exc
        except BotoCoreError as exc:
            raise DatasetError(f"cannot reach {self.uri}: {describe_s3_error(exc)}") from exc

    def object_size(self, folder: str, name: str) -> int | None:
        """Size in bytes of one object (a HEAD request), None when it does not exist."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key(folder, name)
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise DatasetError(f"cannot stat s3://{self.bucket}/{key}: {describe_s3_error(exc)}") from exc
        except BotoCoreError as exc:
            raise DatasetError(f"cannot stat s3://{self.bucket}/{key}: {describe_s3_error(exc)}") from exc

    def object_sizes(self, folder: str) -> dict[str, int]:
        """{name: size} of every object directly under ``<prefix><folder>/``: one listing, 1,000 per page."""
        base = self.key(folder, "")
        out: dict[str, int] = {}
        for key, size in self.list_keys(folder):
            name = key[len(base) :]
            if name and "/" not in name:
                out[name] = size
        return out

    def open_object(self, folder: str, name: str) -> ObjectStream:
        return self._open(self.key(folder, name))

    def read_metadata(self, bin_id: str) -> dict[str, Any]:
        key = self.key(METADATA_DIR, f"{bin_id}.json")
        try:
            return json.loads(self.get(key))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"s3://{self.bucket}/{key} is not valid JSON: {exc}") from exc

    def read_image(self, bin_id: str) -> bytes:
        return self.get(self.key(IMAGE_DIR, f"{bin_id}.jpg"))

    def read_manifest(self) -> list[dict[str, str]] | None:
        try:
            data = self.get(f"{self.prefix}{MANIFEST}")
        except MissingObjectError:
            # Only "there is no manifest" means "read the metadata instead"; an unreachable endpoint or
            # denied access must surface here rather than as a later, misleading listing error.
            return None
        return list(csv.DictReader(data.decode().splitlines()))


def open_source(uri: str | Path, endpoint_url: str | None = None, unsigned: bool | None = None) -> Source:
    """A local folder or an ``s3://`` URI."""
    text = str(uri)
    if text.startswith("s3://"):
        return S3Source(text, endpoint_url=endpoint_url, unsigned=unsigned)
    if "://" in text:
        # Otherwise gs://… or https://… would be reported as a missing local folder.
        raise ValueError(f"unsupported URI {text!r}: use a local folder or s3://bucket/prefix")
    return LocalSource(text)


def load_records(
    source: Source,
    ids: Iterable[str] | None = None,
    use_manifest: bool = True,
    workers: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[BinRecord]:
    """Read the count of every bin (or of ``ids``).

    A ``manifest.csv`` at the root (as ../shared/abid has) gives counts and splits without opening every
    metadata json; otherwise each json is read, in parallel threads since S3 reads are latency-bound.
    """
    manifest = source.read_manifest() if use_manifest else None
    wanted = None if ids is None else list(ids)
    if manifest is not None:
        rows = {r["id"]: r for r in manifest if r.get("has_metadata", "1") == "1"}
        chosen = wanted if wanted is not None else sorted(rows)
        missing = [i for i in chosen if i not in rows]
        if missing:
            raise DatasetError(f"{len(missing)} ids are not in {source.uri}/{MANIFEST}, e.g. {missing[:5]}")
        return [BinRecord(i, int(rows[i]["count"]), rows[i].get("split") or None) for i in chosen]

    chosen = wanted if wanted is not None else source.list_ids()
    if not chosen:
        raise DatasetError(f"no images with metadata found in {source.uri}")

    def one(bin_id: str) -> BinRecord:
        meta = source.read_metadata(bin_id)
        return BinRecord(bin_id, count_from_metadata(meta, f"{source.uri} metadata/{bin_id}.json"))

    out: list[BinRecord] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rec in pool.map(one, chosen):
            out.append(rec)
            if progress:
                progress(1)
    return out
