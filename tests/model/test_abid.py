"""The ABID data layer and subset selection on the real ../shared/abid data, locally and through moto S3."""

from __future__ import annotations

import csv
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from model.abid import (
    IMAGE_DIR,
    METADATA_DIR,
    BinRecord,
    DatasetError,
    LocalSource,
    MissingObjectError,
    S3Source,
    load_records,
    open_source,
    parse_s3_uri,
)
from model.subsets import (
    SubsetSpec,
    histogram,
    read_id_list,
    read_udacity_file_list,
    select,
    stratified_sample,
    stratified_split,
)

# "1" and "00001" are different bins of the real data (0 and 12 objects): ids must never become ints.
LOOKALIKE_IDS = {"1": 0, "00001": 12, "10": 0, "00010": 4}


def manifest_rows(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def spread_ids(root: Path, n: int) -> list[str]:
    """``n`` real ids with metadata, taken evenly through the manifest so several counts are covered."""
    ids = [r["id"] for r in manifest_rows(root) if r["has_metadata"] == "1"]
    step = len(ids) // n
    return ids[::step][:n]


def seed_s3(
    endpoint: str, bucket: str, prefix: str, root: Path, ids: list[str], manifest: bool = False
) -> None:
    """Upload real images and metadata of ``ids`` under ``s3://bucket/<prefix>`` in the ABID layout."""
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

    def put(rel: str) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}{rel}", Body=(root / rel).read_bytes())

    rels = [f"{IMAGE_DIR}/{i}.jpg" for i in ids] + [f"{METADATA_DIR}/{i}.json" for i in ids]
    with ThreadPoolExecutor(8) as pool:  # boto3's default pool holds 10 connections
        list(pool.map(put, rels))
    if manifest:
        wanted = set(ids)
        rows = [r for r in manifest_rows(root) if r["id"] in wanted]
        lines = [",".join(rows[0])] + [",".join(r.values()) for r in rows]
        client.put_object(Bucket=bucket, Key=f"{prefix}manifest.csv", Body="\n".join(lines).encode())


def expected_quantity(root: Path, bin_id: str) -> int:
    return json.loads((root / METADATA_DIR / f"{bin_id}.json").read_text())["EXPECTED_QUANTITY"]


# --- LocalSource on the real data -------------------------------------------------------------------


def test_local_records_have_the_metadata_counts(abid_root: Path) -> None:
    source = LocalSource(abid_root)
    records = {r.id: r for r in load_records(source)}
    # 11,471 images, 2 of them without metadata (manifest has_metadata=0): those are not bins to train on.
    assert len(records) == 11_469
    for bin_id in spread_ids(abid_root, 12) + list(LOOKALIKE_IDS):
        assert records[bin_id].count == expected_quantity(abid_root, bin_id)
    assert {r.split for r in records.values()} == {"train", "val"}


def test_reading_metadata_gives_the_same_counts_as_the_manifest(abid_root: Path) -> None:
    source = LocalSource(abid_root)
    ids = spread_ids(abid_root, 40)
    from_manifest = load_records(source, ids=ids)
    from_json = load_records(source, ids=ids, use_manifest=False, workers=4)
    assert [(r.id, r.count) for r in from_json] == [(r.id, r.count) for r in from_manifest]
    assert all(r.split is None for r in from_json)


def test_ids_stay_strings_with_leading_zeros(abid_root: Path) -> None:
    source = LocalSource(abid_root)
    records = {r.id: r for r in load_records(source, ids=list(LOOKALIKE_IDS))}
    assert {i: r.count for i, r in records.items()} == LOOKALIKE_IDS
    listed = source.list_ids()
    assert "00001" in listed and "1" in listed
    assert all(isinstance(i, str) for i in listed)
    assert source.read_image("1") != source.read_image("00001")


def test_missing_or_malformed_dataset_is_a_dataset_error(abid_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        LocalSource(tmp_path / "nope")
    not_abid = LocalSource(tmp_path)
    with pytest.raises(DatasetError, match="not in ABID layout"):
        not_abid.list_ids()
    with pytest.raises(DatasetError, match="not in ABID layout"):
        not_abid.probe()
    LocalSource(abid_root).probe()
    with pytest.raises(DatasetError, match="not in .*manifest.csv"):
        load_records(LocalSource(abid_root), ids=["00001", "no-such-bin"])
    with pytest.raises(MissingObjectError):
        LocalSource(abid_root).open_object(IMAGE_DIR, "no-such-bin.jpg")


def test_open_source_and_uris(abid_root: Path) -> None:
    assert isinstance(open_source(abid_root), LocalSource)
    assert parse_s3_uri("s3://aft-vbi-pds") == ("aft-vbi-pds", "")
    assert parse_s3_uri("s3://bucket/abid") == ("bucket", "abid/")
    with pytest.raises(ValueError, match="no bucket"):
        open_source("s3://")
    with pytest.raises(ValueError, match="unsupported URI"):
        open_source("gs://bucket/abid")


def test_local_object_sizes(abid_root: Path) -> None:
    source = LocalSource(abid_root)
    sizes = source.object_sizes(IMAGE_DIR)
    assert len(sizes) == 11_471
    assert sizes["00001.jpg"] == (abid_root / IMAGE_DIR / "00001.jpg").stat().st_size
    assert source.object_size(IMAGE_DIR, "00001.jpg") == sizes["00001.jpg"]
    assert source.object_size(IMAGE_DIR, "nope.jpg") is None
    stream = source.open_object(METADATA_DIR, "00001.json")
    try:
        data = stream.body.read()
    finally:
        stream.body.close()
    assert len(data) == stream.size and data == (abid_root / METADATA_DIR / "00001.json").read_bytes()


# --- subsets ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_records(abid_root: Path) -> list[BinRecord]:
    return load_records(LocalSource(abid_root))


def test_count_range(all_records: list[BinRecord]) -> None:
    chosen = select(all_records, SubsetSpec(min_count=1, max_count=5))
    assert chosen and all(1 <= r.count <= 5 for r in chosen)
    assert len(chosen) == sum(1 for r in all_records if 1 <= r.count <= 5)
    assert set(histogram(chosen)) == {1, 2, 3, 4, 5}


def test_id_list(all_records: list[BinRecord], tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("# bins to look at\n00001\n\n  00121  \n1\n")
    assert read_id_list(path) == ["00001", "00121", "1"]
    chosen = select(all_records, SubsetSpec(id_list=path))
    assert {r.id: r.count for r in chosen} == {"00001": 12, "00121": 3, "1": 0}
    # 121 is not 00121: no such bin in this data.
    path.write_text("121\n")
    assert select(all_records, SubsetSpec(id_list=path)) == []
    with pytest.raises(DatasetError, match="does not exist"):
        read_id_list(tmp_path / "missing.txt")


def test_udacity_file_list(all_records: list[BinRecord], tmp_path: Path) -> None:
    by_count: dict[int, list[str]] = {}
    for r in all_records:
        if 1 <= r.count <= 5 and len(by_count.setdefault(r.count, [])) < 3:
            by_count[r.count].append(r.id)
    # The format of Udacity's capstone file_list.json: count -> metadata paths relative to its data folder.
    data = {str(c): [f"data/metadata/{i}.json" for i in ids] for c, ids in by_count.items()}
    path = tmp_path / "file_list.json"
    path.write_text(json.dumps(data))
    listed = read_udacity_file_list(path)
    assert listed == {i: c for c, ids in by_count.items() for i in ids}
    chosen = select(all_records, SubsetSpec(file_list=path))
    assert {r.id: r.count for r in chosen} == listed

    path.write_text(json.dumps({"one": ["metadata/00001.json"]}))
    with pytest.raises(DatasetError, match="must map a count"):
        read_udacity_file_list(path)
    path.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="must map counts"):
        read_udacity_file_list(path)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_udacity_file_list(path)


def test_limit_is_stratified_and_deterministic(all_records: list[BinRecord]) -> None:
    spec = SubsetSpec(max_count=10, limit=500, seed=7)
    pool = select(all_records, SubsetSpec(max_count=10))
    chosen = select(all_records, spec)
    assert len(chosen) == 500 and len({r.id for r in chosen}) == 500
    full, part = histogram(pool), histogram(chosen)
    for count, n in full.items():
        # Largest-remainder rounding: each count gets its exact share rounded down or up.
        exact = 500 * n / len(pool)
        assert int(exact) <= part.get(count, 0) <= int(exact) + 1, count
    assert select(all_records, spec) == chosen
    assert select(all_records, SubsetSpec(max_count=10, limit=500, seed=8)) != chosen
    assert stratified_sample(chosen, 500, seed=0) == chosen


def test_split_from_manifest(all_records: list[BinRecord]) -> None:
    val = select(all_records, SubsetSpec(split="val"))
    assert len(val) == sum(1 for r in all_records if r.split == "val") > 1000
    no_split = [BinRecord(r.id, r.count) for r in all_records[:50]]
    with pytest.raises(DatasetError, match="no manifest"):
        select(no_split, SubsetSpec(split="val"))


def test_stratified_split_keeps_proportions_and_is_deterministic(all_records: list[BinRecord]) -> None:
    records = select(all_records, SubsetSpec(max_count=12))
    train, val, test = stratified_split(records, val_fraction=0.2, test_fraction=0.1, seed=3)
    ids = [r.id for part in (train, val, test) for r in part]
    assert len(ids) == len(set(ids)) == len(records)
    full = Counter(r.count for r in records)
    for part, fraction in ((val, 0.2), (test, 0.1)):
        got = Counter(r.count for r in part)
        for count, n in full.items():
            assert abs(got[count] - n * fraction) <= 1, (count, got[count], n)
    assert stratified_split(records, 0.2, 0.1, seed=3) == (train, val, test)
    assert stratified_split(records, 0.2, 0.1, seed=4)[1] != val
    with pytest.raises(ValueError):
        stratified_split(records, val_fraction=0.6, test_fraction=0.5)


# --- S3Source against a real moto_server ---------------------------------------------------------


def test_s3_source_reads_the_same_counts_as_local(
    abid_root: Path, moto_endpoint: str, s3_bucket: str
) -> None:
    ids = sorted(set(spread_ids(abid_root, 38)) | {"1", "00001"})
    seed_s3(moto_endpoint, s3_bucket, "abid/", abid_root, ids)
    source = S3Source(f"s3://{s3_bucket}/abid/", endpoint_url=moto_endpoint)
    source.probe()
    assert source.read_manifest() is None
    assert source.list_ids() == ids

    from_s3 = load_records(source, use_manifest=False, workers=8)
    local = load_records(LocalSource(abid_root), ids=ids, use_manifest=False)
    assert [(r.id, r.count) for r in from_s3] == [(r.id, r.count) for r in local]
    assert source.read_image("00001") == (abid_root / IMAGE_DIR / "00001.jpg").read_bytes()

    sizes = source.object_sizes(IMAGE_DIR)
    assert sizes == {f"{i}.jpg": (abid_root / IMAGE_DIR / f"{i}.jpg").stat().st_size for i in ids}
    assert source.object_size(METADATA_DIR, "1.json") == (abid_root / METADATA_DIR / "1.json").stat().st_size
    assert source.object_size(METADATA_DIR, "121.json") is None
    with pytest.raises(MissingObjectError, match="does not exist"):
        source.read_image("121")


def test_s3_source_uses_an_uploaded_manifest(abid_root: Path, moto_endpoint: str, s3_bucket: str) -> None:
    ids = spread_ids(abid_root, 20)
    seed_s3(moto_endpoint, s3_bucket, "", abid_root, ids, manifest=True)
    source = open_source(f"s3://{s3_bucket}", endpoint_url=moto_endpoint)
    records = load_records(source)
    assert [r.id for r in records] == sorted(ids)
    assert all(r.split in ("train", "val") for r in records)
    assert [r.count for r in records] == [expected_quantity(abid_root, r.id) for r in records]


def test_s3_errors_are_dataset_errors(moto_endpoint: str) -> None:
    missing_bucket = S3Source("s3://no-such-bucket-here/", endpoint_url=moto_endpoint)
    with pytest.raises(DatasetError, match="does not exist"):
        missing_bucket.probe()
    # Nothing listens on port 9 (discard): a missing manifest must not be what this looks like.
    unreachable = S3Source("s3://bucket/", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(DatasetError, match="Could not connect"):
        unreachable.read_manifest()
    with pytest.raises(DatasetError, match="cannot reach"):
        unreachable.probe()


def test_s3_errors_never_carry_the_endpoints_text() -> None:
    # A dataset endpoint is chosen per job; what it answers must not travel into the job's error, which
    # clients read (it could be an internal service's reply). Only the status and error code are kept.
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = (
        b'<?xml version="1.0"?><Error><Code>Access<Denied>!</Code>'
        b"<Message>internal-admin-token=SECRET-REMOTE-TEXT</Message></Error>"
    )

    class Hostile(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = S3Source("s3://bucket/abid/", endpoint_url=f"http://127.0.0.1:{server.server_port}")
        for attempt in (source.read_manifest, lambda: source.object_sizes("metadata")):
            with pytest.raises(DatasetError) as caught:
                attempt()
            message = str(caught.value)
            assert "SECRET-REMOTE-TEXT" not in message and "<" not in message, message
            assert "HTTP 403" in message, message
    finally:
        server.shutdown()
