"""Copy bins of an ABID-layout store (local folder or S3) into a local folder, in parallel and resumably.

``dest`` gets the same layout as the source (``bin-images/<id>.jpg``, ``metadata/<id>.json``) and nothing
else, so it can be opened with :class:`model.abid.LocalSource` afterwards.

Resuming: a file already in ``dest`` whose size equals the remote object's size is kept. Size is the
check because ABID objects are written once and never changed; a partial or truncated copy (an older
tool, a full disk) has a different size and is fetched again. A killed run cannot leave a partial file
under a final name: every object is written to a hidden ``.<name>.<random>.part`` file next to it and
renamed into place (``os.replace`` is atomic); leftovers of a killed run are removed by the next run.
Two fetches into the same ``dest`` at the same time are therefore not supported.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from model.abid import IMAGE_DIR, METADATA_DIR, DatasetError, MissingObjectError, Source, count_from_metadata

FOLDERS = (IMAGE_DIR, METADATA_DIR)
PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class FetchFailure:
    """One object that could not be fetched, and why."""

    bin_id: str
    path: str  # relative to the layout root, e.g. ``bin-images/00001.jpg``
    error: str

    def __str__(self) -> str:
        return f"{self.path}: {self.error}"


@dataclass
class FetchReport:
    """What a fetch did. ``downloaded``/``skipped``/``failed`` count files (two per bin), not bins."""

    source: str
    dest: Path
    requested_bins: int
    downloaded: int = 0
    skipped: int = 0
    bytes_downloaded: int = 0
    bytes_skipped: int = 0
    failures: list[FetchFailure] = field(default_factory=list)
    # Count (EXPECTED_QUANTITY) of every bin whose image and metadata are both complete in dest.
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def complete_bins(self) -> int:
        return len(self.counts)

    @property
    def histogram(self) -> dict[int, int]:
        """{count: number of complete bins with that count}, ascending by count."""
        return dict(sorted(Counter(self.counts.values()).items()))


@dataclass(frozen=True)
class _Task:
    bin_id: str
    folder: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.name}"


@dataclass(frozen=True)
class _Outcome:
    task: _Task
    status: Literal["downloaded", "skipped", "failed"]
    size: int = 0
    count: int | None = None  # metadata tasks only
    error: str | None = None


def fetch(
    source: Source,
    dest: Path,
    ids: Sequence[str],
    workers: int = 16,
    progress: bool = True,
    list_threshold: int = 1000,
) -> FetchReport:
    """Download ``bin-images/<id>.jpg`` and ``metadata/<id>.json`` of every id into ``dest``.

    Files already complete in ``dest`` are skipped. One object failing (missing, unreadable, invalid
    metadata json) is recorded in the report's ``failures`` and does not stop the others; problems with
    the request itself (bad id, ``dest`` not a folder, workers < 1) raise ``ValueError``/``DatasetError``.

    To check the files already in ``dest`` the remote sizes are needed: with ``list_threshold`` or more
    such files in one folder the source's folder is listed once (S3 lists 1,000 objects per request),
    below that each is looked up on its own (one HEAD each), which is cheaper for a few files in a
    large bucket such as the public one.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    bin_ids = _unique_ids(ids)
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise DatasetError(f"destination {dest} exists and is not a folder")
    for folder in FOLDERS:
        (dest / folder).mkdir(parents=True, exist_ok=True)
        _remove_partials(dest / folder)

    local_sizes = {folder: _local_sizes(dest / folder) for folder in FOLDERS}
    tasks = [
        task
        for bin_id in bin_ids
        for task in (_Task(bin_id, IMAGE_DIR, f"{bin_id}.jpg"), _Task(bin_id, METADATA_DIR, f"{bin_id}.json"))
    ]
    remote_sizes: dict[str, dict[str, int] | None] = {}
    for folder in FOLDERS:
        present = sum(1 for t in tasks if t.folder == folder and t.name in local_sizes[folder])
        remote_sizes[folder] = source.object_sizes(folder) if present and present >= list_threshold else None

    report = FetchReport(source=source.uri, dest=dest, requested_bins=len(bin_ids))
    meta_counts: dict[str, int] = {}
    failed_bins: set[str] = set()
    bar = tqdm(total=len(tasks), unit="file", desc="fetch", disable=not progress, dynamic_ncols=True)
    outcomes = _run(tasks, workers, source, dest, local_sizes, remote_sizes)
    # closing(): an exception in this loop (Ctrl-C) shuts the pool down now, not at garbage collection.
    with bar, contextlib.closing(outcomes):
        for outcome in outcomes:
            task = outcome.task
            if outcome.status == "failed":
                failed_bins.add(task.bin_id)
                report.failures.append(FetchFailure(task.bin_id, task.path, outcome.error or "unknown error"))
            elif outcome.status == "skipped":
                report.skipped += 1
                report.bytes_skipped += outcome.size
            else:
                report.downloaded += 1
                report.bytes_downloaded += outcome.size
            if outcome.count is not None:
                meta_counts[task.bin_id] = outcome.count
            bar.update(1)
            bar.set_postfix_str(
                f"{human_bytes(report.bytes_downloaded)} new, {report.failed} failed", refresh=False
            )

    report.counts = {b: meta_counts[b] for b in bin_ids if b in meta_counts and b not in failed_bins}
    report.failures.sort(key=lambda f: (f.bin_id, f.path))
    return report


def _run(
    tasks: list[_Task],
    workers: int,
    source: Source,
    dest: Path,
    local_sizes: dict[str, dict[str, int]],
    remote_sizes: dict[str, dict[str, int] | None],
) -> Iterator[_Outcome]:
    """Outcomes as they finish. Only a bounded window of tasks is queued at a time, so fetching the whole
    public bucket (a million objects) does not first build a million futures."""
    pending: set[Future[_Outcome]] = set()
    queue = iter(tasks)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")

    def submit_next() -> None:
        task = next(queue, None)
        if task is not None:
            pending.add(
                pool.submit(
                    _fetch_one,
                    source,
                    dest,
                    task,
                    local_sizes[task.folder].get(task.name),
                    remote_sizes[task.folder],
                )
            )

    try:
        for _ in range(workers * 4):
            submit_next()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                pending.discard(fut)
                submit_next()
                yield fut.result()
    finally:
        # On Ctrl-C (or a consumer stopping early) drop what has not started; running tasks finish or
        # clean up their own temp files.
        pool.shutdown(wait=True, cancel_futures=True)


def _fetch_one(
    source: Source,
    dest: Path,
    task: _Task,
    local_size: int | None,
    remote_sizes: dict[str, int] | None,
) -> _Outcome:
    target = dest / task.folder / task.name
    is_meta = task.folder == METADATA_DIR
    try:
        if local_size is not None:
            remote = (
                remote_sizes.get(task.name)
                if remote_sizes is not None
                else source.object_size(task.folder, task.name)
            )
            if remote is None:
                raise MissingObjectError(f"not in {source.uri} (the copy already in {dest} was left alone)")
            if remote == local_size:
                if not is_meta:
                    return _Outcome(task, "skipped", size=local_size)
                try:
                    count = _count(target.read_bytes(), task)
                    return _Outcome(task, "skipped", size=local_size, count=count)
                except DatasetError:
                    pass  # right size but unreadable: fetch it again below
        size, count = _download(source, task, target, is_meta)
        return _Outcome(task, "downloaded", size=size, count=count)
    except Exception as exc:  # noqa: BLE001 - one object's failure must not stop the others; it is reported
        message = str(exc) if isinstance(exc, DatasetError) else f"{type(exc).__name__}: {exc}"
        return _Outcome(task, "failed", error=message)


def _download(source: Source, task: _Task, target: Path, is_meta: bool) -> tuple[int, int | None]:
    """Stream the object into a temp file next to ``target`` and rename it into place once complete."""
    stream = source.open_object(task.folder, task.name)
    tmp = target.parent / f".{task.name}.{secrets.token_hex(6)}{PART_SUFFIX}"
    try:
        # Not tempfile.mkstemp: its 0600 mode would survive the rename, and fetched data should get the
        # usual umask-based permissions like any other file the user writes.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except BaseException:
        stream.body.close()
        raise
    try:
        written = 0
        head = bytearray()  # metadata jsons are a few KB: kept to read the count before committing
        with contextlib.closing(stream.body), os.fdopen(fd, "wb") as out:
            while chunk := stream.body.read(CHUNK_BYTES):
                out.write(chunk)
                written += len(chunk)
                if is_meta:
                    head += chunk
        if written != stream.size:
            raise DatasetError(f"short read: got {written} of {stream.size} bytes")
        # Invalid metadata is not put in place: downstream training would fail on it much later.
        count = _count(bytes(head), task) if is_meta else None
        # No fsync: a killed process loses nothing already written, and after a power cut the usual
        # leftover is a short or empty file, which the next run's size check replaces anyway.
        os.replace(tmp, target)
        return written, count
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _count(data: bytes, task: _Task) -> int:
    try:
        meta = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise DatasetError("not an ABID metadata json (top level is not an object)")
    return count_from_metadata(meta, task.path)


def _unique_ids(ids: Sequence[str]) -> list[str]:
    """Ids in first-seen order without repeats; ids that would name a path outside dest are refused."""
    seen: dict[str, None] = {}
    for bin_id in ids:
        if not isinstance(bin_id, str):
            raise ValueError(f"bin ids are strings (00121 and 121 differ), got {bin_id!r}")
        if not bin_id or bin_id in (".", "..") or any(c in bin_id for c in "/\\\0"):
            raise ValueError(f"invalid bin id {bin_id!r}")
        seen.setdefault(bin_id, None)
    return list(seen)


def _local_sizes(folder: Path) -> dict[str, int]:
    with os.scandir(folder) as it:
        return {e.name: e.stat().st_size for e in it if e.is_file()}


def _remove_partials(folder: Path) -> None:
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith(".") and entry.name.endswith(PART_SUFFIX):
                Path(entry.path).unlink(missing_ok=True)


def human_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KB`` (binary units), for reports."""
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KB", "MB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
