"""`model.fetch` and `binwatch data fetch|summary` on real ABID files, from a folder and from a moto S3."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from binwatch.cli.data import app
from model.abid import IMAGE_DIR, METADATA_DIR, DatasetError, LocalSource, S3Source, load_records
from model.fetch import fetch, human_bytes
from model.subsets import SubsetSpec, select
from tests.model.test_abid import expected_quantity, seed_s3, spread_ids

BINWATCH = str(Path(sys.executable).with_name("binwatch"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def layout_files(root: Path) -> set[str]:
    """Every file under the two ABID folders, as ``folder/name`` (hidden temp files included)."""
    return {
        f"{d}/{p.name}"
        for d in (IMAGE_DIR, METADATA_DIR)
        if (root / d).is_dir()
        for p in (root / d).iterdir()
    }


def expected_files(ids: list[str]) -> set[str]:
    return {f"{IMAGE_DIR}/{i}.jpg" for i in ids} | {f"{METADATA_DIR}/{i}.json" for i in ids}


def assert_identical(dest: Path, source_root: Path, ids: list[str]) -> None:
    assert layout_files(dest) == expected_files(ids)
    for rel in expected_files(ids):
        assert sha256(dest / rel) == sha256(source_root / rel), rel


def copy_bins(src: Path, dst: Path, ids: list[str]) -> None:
    """A small ABID-layout folder under tmp_path, for sources that must differ from the shared data."""
    for folder, ext in ((IMAGE_DIR, "jpg"), (METADATA_DIR, "json")):
        (dst / folder).mkdir(parents=True, exist_ok=True)
        for i in ids:
            shutil.copyfile(src / folder / f"{i}.{ext}", dst / folder / f"{i}.{ext}")


# --- model.fetch --------------------------------------------------------------------------------------


def test_fetch_from_a_local_folder_then_resume(abid_root: Path, tmp_path: Path) -> None:
    ids = spread_ids(abid_root, 30) + ["1"]
    dest = tmp_path / "dest"
    report = fetch(LocalSource(abid_root), dest, ids, workers=4, progress=False)
    assert (report.downloaded, report.skipped, report.failed) == (62, 0, 0)
    assert report.bytes_downloaded == sum((abid_root / rel).stat().st_size for rel in expected_files(ids))
    assert report.counts == {i: expected_quantity(abid_root, i) for i in ids}
    assert sum(report.histogram.values()) == report.complete_bins == 31
    assert_identical(dest, abid_root, ids)
    # Fetched files get the permissions any file the user writes gets (not a temp file's 0600).
    (tmp_path / "plain").write_text("x")
    assert (dest / IMAGE_DIR / "1.jpg").stat().st_mode == (tmp_path / "plain").stat().st_mode
    # The result is itself an ABID-layout source.
    assert [r.id for r in load_records(LocalSource(dest))] == sorted(ids)

    again = fetch(LocalSource(abid_root), dest, ids + ids[:3], workers=4, progress=False)
    assert (again.downloaded, again.skipped, again.failed) == (0, 62, 0)
    assert again.bytes_skipped == report.bytes_downloaded and again.histogram == report.histogram


def test_truncated_or_corrupt_files_are_fetched_again(abid_root: Path, tmp_path: Path) -> None:
    ids = spread_ids(abid_root, 20)
    dest = tmp_path / "dest"
    fetch(LocalSource(abid_root), dest, ids, progress=False)
    image = dest / IMAGE_DIR / f"{ids[3]}.jpg"
    image.write_bytes(image.read_bytes()[:1000])  # what a killed non-atomic writer leaves
    meta = dest / METADATA_DIR / f"{ids[5]}.json"
    meta.write_bytes(b"\0" * meta.stat().st_size)  # right size, unreadable
    stale = dest / IMAGE_DIR / f".{ids[7]}.jpg.k3j2h1.part"
    stale.write_bytes(b"half an image")  # a temp file of a killed run

    # list_threshold=0: remote sizes from one listing instead of one lookup per file.
    report = fetch(LocalSource(abid_root), dest, ids, progress=False, list_threshold=0)
    assert (report.downloaded, report.skipped, report.failed) == (2, 38, 0)
    assert not stale.exists()
    assert_identical(dest, abid_root, ids)
    assert report.counts[ids[5]] == expected_quantity(abid_root, ids[5])


def test_failures_are_reported_per_object_and_do_not_stop_the_rest(abid_root: Path, tmp_path: Path) -> None:
    ids = spread_ids(abid_root, 6)
    src = tmp_path / "src"
    copy_bins(abid_root, src, ids)
    (src / IMAGE_DIR / f"{ids[1]}.jpg").unlink()
    (src / METADATA_DIR / f"{ids[2]}.json").write_text('{"BIN_FCSKU_DATA": {}}')  # no EXPECTED_QUANTITY
    dest = tmp_path / "dest"

    report = fetch(LocalSource(src), dest, [*ids, "no-such-bin"], workers=3, progress=False)
    failed = {f.path: f.error for f in report.failures}
    assert set(failed) == {
        f"{IMAGE_DIR}/{ids[1]}.jpg",
        f"{METADATA_DIR}/{ids[2]}.json",
        f"{IMAGE_DIR}/no-such-bin.jpg",
        f"{METADATA_DIR}/no-such-bin.json",
    }
    assert "does not exist" in failed[f"{IMAGE_DIR}/{ids[1]}.jpg"]
    assert "EXPECTED_QUANTITY" in failed[f"{METADATA_DIR}/{ids[2]}.json"]
    assert (report.downloaded, report.failed) == (10, 4)
    assert set(report.counts) == {ids[0], *ids[3:]}
    # Invalid metadata is not put in place, and nothing half-written is left.
    assert not (dest / METADATA_DIR / f"{ids[2]}.json").exists()
    assert not [p for p in layout_files(dest) if p.split("/")[1].startswith(".")]


def test_a_local_copy_whose_remote_object_vanished_is_a_failure_and_kept(
    abid_root: Path, tmp_path: Path
) -> None:
    ids = spread_ids(abid_root, 3)
    src, dest = tmp_path / "src", tmp_path / "dest"
    copy_bins(abid_root, src, ids)
    fetch(LocalSource(src), dest, ids, progress=False)
    (src / IMAGE_DIR / f"{ids[0]}.jpg").unlink()
    report = fetch(LocalSource(src), dest, ids, progress=False)
    assert [f.path for f in report.failures] == [f"{IMAGE_DIR}/{ids[0]}.jpg"]
    assert "left alone" in report.failures[0].error
    assert (dest / IMAGE_DIR / f"{ids[0]}.jpg").is_file()


def test_bad_requests_raise(abid_root: Path, tmp_path: Path) -> None:
    source = LocalSource(abid_root)
    for bad in ("../etc", "a/b", "", ".."):
        with pytest.raises(ValueError, match="invalid bin id"):
            fetch(source, tmp_path / "d", ["00001", bad], progress=False)
    with pytest.raises(ValueError, match="strings"):
        fetch(source, tmp_path / "d", [1], progress=False)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="workers"):
        fetch(source, tmp_path / "d", ["00001"], workers=0, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        fetch(source, tmp_path / "file", ["00001"], progress=False)


def test_fetch_from_s3_with_listing_and_with_head(
    abid_root: Path, moto_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    ids = spread_ids(abid_root, 25)
    seed_s3(moto_endpoint, s3_bucket, "abid/", abid_root, ids)
    source = S3Source(f"s3://{s3_bucket}/abid/", endpoint_url=moto_endpoint)
    dest = tmp_path / "dest"
    first = fetch(source, dest, ids, workers=8, progress=False)
    assert (first.downloaded, first.failed) == (50, 0)
    assert_identical(dest, abid_root, ids)
    # One HEAD per existing file, then one listing per folder: both must agree everything is complete.
    by_head = fetch(source, dest, ids, workers=8, progress=False)
    by_listing = fetch(source, dest, ids, workers=8, progress=False, list_threshold=1)
    for report in (by_head, by_listing):
        assert (report.downloaded, report.skipped, report.failed) == (0, 50, 0)
        assert report.histogram == first.histogram


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 1024**2, 3 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.5 KB",
        "5.0 MB",
        "3.0 GB",
    ]


# --- the `binwatch data` commands in-process (fast) ---------------------------------------------------

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("summary", "/no/such/folder"), "dataset folder /no/such/folder does not exist"),
        (("summary", "s3://"), "has no bucket name"),
        (("summary", "gs://bucket/abid"), "unsupported URI"),
        (("fetch", "/no/such/folder", "out"), "does not exist"),
        (("fetch", "s3://bucket/abid/", "s3://other/x"), "DEST must be a local folder"),
        (("summary", "s3://bucket/abid/", "--endpoint-url", "http://127.0.0.1:9"), "Could not connect"),
        (("summary", "SHARED", "--ids", "/no/ids.txt"), "id list /no/ids.txt does not exist"),
        (("summary", "SHARED", "--split", "val", "--min-count", "90"), "no bins in"),
    ],
)
def test_cli_errors_are_one_clear_line(abid_root: Path, args: tuple[str, ...], message: str) -> None:
    args = tuple(str(abid_root) if a == "SHARED" else a for a in args)
    code, _, err = invoke(*args)
    assert code == 2, err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_cli_fetch_with_a_file_list_needs_no_reads_to_filter(abid_root: Path, tmp_path: Path) -> None:
    records = load_records(LocalSource(abid_root), ids=spread_ids(abid_root, 60))
    listed = [r for r in records if 1 <= r.count <= 5]
    file_list = tmp_path / "file_list.json"
    by_count: dict[str, list[str]] = {}
    for r in listed:
        by_count.setdefault(str(r.count), []).append(f"metadata/{r.id}.json")
    file_list.write_text(json.dumps(by_count))
    dest = tmp_path / "dest"
    code, out, err = invoke(
        "fetch", str(abid_root), str(dest), "--file-list", str(file_list), "--max-count", "2", "--no-progress"
    )
    assert code == 0, err
    want = sorted(r.id for r in listed if r.count <= 2)
    assert sorted(p.stem for p in (dest / METADATA_DIR).iterdir()) == want
    assert re.search(rf"complete bins\W+{len(want)} of {len(want)}", out)

    # The copy has no manifest.csv: summary reads each metadata json instead.
    code, out, err = invoke("summary", str(dest), "--no-progress")
    assert code == 0, err
    assert f"total: {len(want)} bins" in out and "split" not in out


def test_cli_ids_missing_from_the_source_are_left_out_with_a_warning(abid_root: Path, tmp_path: Path) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("00001\n1\n121\n")
    code, out, err = invoke("summary", str(abid_root), "--ids", str(ids_file), "--no-progress")
    assert code == 0, err
    assert "1 listed ids are not in" in err and "121" in err
    assert "total: 2 bins" in out


# --- the installed `binwatch` command as a user runs it ------------------------------------------------


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([BINWATCH, *args], capture_output=True, text=True, env=env, timeout=timeout)


def files_done(dest: Path) -> int:
    return sum(1 for p in layout_files(dest) if not p.split("/")[1].startswith("."))


def reported(output: str, row: str) -> int:
    match = re.search(rf"{row}\W+([\d,]+)", output)
    assert match, f"no {row!r} row in:\n{output}"
    return int(match.group(1).replace(",", ""))


@pytest.mark.slow
def test_cli_fetch_from_s3_killed_midway_resumes_to_identical_files(
    abid_root: Path, moto_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    ids = spread_ids(abid_root, 300)
    seed_s3(moto_endpoint, s3_bucket, "abid/", abid_root, ids)
    dest = tmp_path / "dest"
    args = ["data", "fetch", f"s3://{s3_bucket}/abid/", str(dest), "--endpoint-url", moto_endpoint]

    log = tmp_path / "killed.log"
    with log.open("w") as fh:
        # One worker so the 600 objects take a few seconds: long enough to be caught midway.
        proc = subprocess.Popen([BINWATCH, *args, "--workers", "1"], stdout=fh, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while files_done(dest) < 20 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"fetch ended before it was killed:\n{log.read_text()}"
    at_kill = files_done(dest)
    assert 20 <= at_kill < 600, at_kill
    # Whatever is under a final name is complete: only the temp files may be partial.
    for rel in layout_files(dest):
        if not rel.split("/")[1].startswith("."):
            assert sha256(dest / rel) == sha256(abid_root / rel), rel

    res = run_cli(*args, "--workers", "8")
    assert res.returncode == 0, res.stdout + res.stderr
    assert reported(res.stdout, "skipped") == at_kill
    assert reported(res.stdout, "downloaded") == 600 - at_kill
    assert reported(res.stdout, "failed") == 0
    assert_identical(dest, abid_root, ids)  # also: no temp files left behind
    assert "complete bins by object count" in res.stdout


@pytest.mark.slow
def test_cli_fetch_reports_a_missing_s3_object_and_exits_1(
    abid_root: Path, moto_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    ids = spread_ids(abid_root, 6)
    seed_s3(moto_endpoint, s3_bucket, "abid/", abid_root, ids)
    gone = ids[2]
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").delete_object(
        Bucket=s3_bucket, Key=f"abid/{IMAGE_DIR}/{gone}.jpg"
    )
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    dest = tmp_path / "dest"

    res = run_cli(
        "data",
        "fetch",
        f"s3://{s3_bucket}/abid/",
        str(dest),
        "--endpoint-url",
        moto_endpoint,
        "--ids",
        str(ids_file),
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert (
        f"FAILED {IMAGE_DIR}/{gone}.jpg: s3://{s3_bucket}/abid/{IMAGE_DIR}/{gone}.jpg does not exist"
        in res.stderr
    )
    assert "Traceback" not in res.stderr
    assert reported(res.stdout, "failed") == 1
    assert re.search(r"complete bins\W+5 of 6", res.stdout)
    others = [i for i in ids if i != gone]
    for rel in expected_files(others):
        assert sha256(dest / rel) == sha256(abid_root / rel)


@pytest.mark.slow
def test_cli_fetch_from_a_local_folder_with_subset_options(abid_root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    res = run_cli(
        "data", "fetch", str(abid_root), str(dest), "--max-count", "3", "--limit", "24", "--seed", "5"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    want = select(load_records(LocalSource(abid_root)), SubsetSpec(max_count=3, limit=24, seed=5))
    assert_identical(dest, abid_root, [r.id for r in want])
    assert all(expected_quantity(dest, r.id) <= 3 for r in want)
    assert reported(res.stdout, "downloaded") == 48


@pytest.mark.slow
def test_cli_summary_shows_the_histogram(abid_root: Path, tmp_path: Path) -> None:
    ids = spread_ids(abid_root, 40)
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids))
    res = run_cli("data", "summary", str(abid_root), "--ids", str(ids_file))
    assert res.returncode == 0, res.stdout + res.stderr
    records = load_records(LocalSource(abid_root), ids=ids)
    counts: dict[int, int] = {}
    for r in records:
        counts[r.count] = counts.get(r.count, 0) + 1
    for count, n in counts.items():
        assert re.search(rf"│\s+{count} │\s+{n} │\s+{100 * n / 40:.1f}% │ █+", res.stdout), (count, n)
    assert "total: 40 bins" in res.stdout
    over5 = sum(n for c, n in counts.items() if c > 5)
    assert f"more than 5 objects: {over5} bins" in res.stdout
    train = sum(1 for r in records if r.split == "train")
    assert f"split (manifest.csv): train {train}, val {40 - train}" in res.stdout
