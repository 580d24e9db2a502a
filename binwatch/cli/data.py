"""`binwatch data fetch` and `binwatch data summary`: get ABID-layout data and see what is in it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from tqdm import tqdm

from binwatch.cli.helptext import command
from binwatch.cli.options import Endpoint, FileList, Ids, Limit, MaxCount, MinCount
from model.abid import BinRecord, DatasetError, LocalSource, Source, load_records, open_source
from model.fetch import FetchReport, human_bytes
from model.fetch import fetch as fetch_bins
from model.subsets import SubsetSpec, histogram, read_id_list, read_udacity_file_list, select

app = typer.Typer(
    name="data",
    help="Fetch and summarise ABID-layout datasets (local folder or S3).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

BAR_WIDTH = 40


# Arguments and options shared by both commands.
SourceArg = Annotated[
    str,
    typer.Argument(
        metavar="SOURCE",
        help="ABID-layout store: a local folder, or s3://bucket/prefix "
        "(the public ABID bucket is s3://aft-vbi-pds/).",
        show_default=False,
    ),
]
UnsignedOpt = Annotated[
    bool | None,
    typer.Option(
        "--unsigned/--signed",
        help="Read S3 anonymously, or sign requests with your AWS credentials. Default: anonymous "
        "for the public bucket s3://aft-vbi-pds/ (without --endpoint-url), signed otherwise.",
        show_default=False,
    ),
]
SplitOpt = Annotated[
    str | None,
    typer.Option("--split", help="Only this split (train or val) of the dataset's manifest.csv."),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for --limit's sampling (same seed, same bins).")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Parallel downloads/reads.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")]


@command(app, "fetch")
def fetch_cmd(
    source: SourceArg,
    dest: Annotated[
        str,
        typer.Argument(
            metavar="DEST", help="Local folder to copy into (created if missing).", show_default=False
        ),
    ],
    endpoint_url: Endpoint = None,
    unsigned: UnsignedOpt = None,
    min_count: MinCount = None,
    max_count: MaxCount = None,
    split: SplitOpt = None,
    ids: Ids = None,
    file_list: FileList = None,
    limit: Limit = None,
    seed: SeedOpt = 0,
    workers: WorkersOpt = 16,
    progress: ProgressOpt = True,
) -> None:
    """Copy bins (photo + metadata json) from SOURCE into the local folder DEST, in the same ABID layout.

    DEST gets bin-images/ID.jpg and metadata/ID.json for every chosen bin. Run the same command again to
    resume: files already complete in DEST are skipped, and an interrupted run never leaves a half-written
    file behind. A bin that cannot be fetched is listed with its error at the end (the others are still
    fetched) and the exit code is 1.

    Which bins: all of SOURCE by default, narrowed by --min-count, --max-count, --split, --ids and
    --file-list (they combine); then --limit samples that many, keeping each count's share. With --ids or
    --file-list the bucket is never listed; without them the counts come from SOURCE's manifest.csv or,
    if it has none, from reading every metadata json.

    Examples:

      # 500 bins holding 1 to 5 objects (Udacity's list), from the public bucket
      binwatch data fetch s3://aft-vbi-pds/ data/abid --file-list file_list.json --limit 500

      # exactly the bins in ids.txt (one id per line)
      binwatch data fetch s3://aft-vbi-pds/ data/abid --ids ids.txt

      # bins with at most 5 objects from a local copy
      binwatch data fetch ../shared/abid data/small --max-count 5

      # a private S3-compatible store, with your AWS credentials
      binwatch data fetch s3://my-bucket/abid/ data/abid --endpoint-url http://localhost:9000
    """
    with _clean_errors():
        # A str until here: Path() would quietly turn s3://b/x into the local folder s3:/b/x.
        if "://" in dest:
            raise DatasetError(f"DEST must be a local folder, got {dest}")
        src = _open(source, endpoint_url, unsigned)
        spec = SubsetSpec(min_count=min_count, max_count=max_count, split=split, limit=limit, seed=seed)
        chosen = _choose_ids(src, spec, ids, file_list, workers, progress)
        if not chosen:
            raise DatasetError(f"no bins in {src.uri} match the subset options")
        err.print(f"fetching {len(chosen):,} bins from {escape(src.uri)} into {escape(dest)}", soft_wrap=True)
        report = fetch_bins(src, Path(dest), chosen, workers=workers, progress=progress)

    # Paths on their own line: as a table title they would be wrapped to the table's width.
    console.print(Text(f"fetch {report.source} -> {report.dest}", style="bold"), soft_wrap=True)
    console.print(_fetch_table(report))
    if report.histogram:
        console.print(_histogram_table(report.histogram, "complete bins by object count"))
    for failure in report.failures:
        err.print(Text(f"FAILED {failure.path}: {failure.error}", style="red"), soft_wrap=True)
    if report.failures:
        err.print(
            f"[red]{report.failed} of {report.requested_bins * 2} files failed[/]; "
            "run the same command again to retry just those."
        )
        raise typer.Exit(1)


@command(app, "summary")
def summary_cmd(
    source: SourceArg,
    endpoint_url: Endpoint = None,
    unsigned: UnsignedOpt = None,
    min_count: MinCount = None,
    max_count: MaxCount = None,
    split: SplitOpt = None,
    ids: Ids = None,
    file_list: FileList = None,
    limit: Limit = None,
    seed: SeedOpt = 0,
    workers: WorkersOpt = 16,
    progress: ProgressOpt = True,
) -> None:
    """Show how many bins SOURCE holds for each object count: the class balance a model trains on.

    One row per count (bins, share, a bar), the total, how many bins hold more than 5 objects, and the
    train/val sizes when SOURCE has a manifest.csv. Counts come from that manifest when there is one,
    otherwise from every metadata json, which is slow for a whole S3 bucket: narrow it with --ids or
    --file-list. The subset options are those of `binwatch data fetch`.

    Examples:

      binwatch data summary ../shared/abid
      binwatch data summary ../shared/abid --split val --max-count 5
      binwatch data summary data/abid
      binwatch data summary s3://aft-vbi-pds/ --ids ids.txt
    """
    with _clean_errors():
        src = _open(source, endpoint_url, unsigned)
        spec = SubsetSpec(min_count=min_count, max_count=max_count, split=split, limit=limit, seed=seed)
        listed, _ = _read_lists(ids, file_list)
        records = (
            _load_all(src, workers, progress)
            if listed is None
            else _records_for_ids(src, listed, workers, progress)
        )
        chosen = select(records, spec)
        if not chosen:
            raise DatasetError(f"no bins in {src.uri} match the subset options")

    total = len(chosen)
    console.print(Text(f"summary of {src.uri}", style="bold"), soft_wrap=True)
    console.print(_histogram_table(histogram(chosen), "bins by object count"))
    over5 = sum(1 for r in chosen if r.count > 5)
    console.print(f"total: {total:,} bins")
    console.print(f"more than 5 objects: {over5:,} bins ({over5 / total:.1%})")
    splits = sorted({r.split for r in chosen if r.split})
    if splits:
        parts = ", ".join(f"{s} {sum(1 for r in chosen if r.split == s):,}" for s in splits)
        console.print(f"split (manifest.csv): {escape(parts)}")


@contextlib.contextmanager
def _clean_errors() -> Iterator[None]:
    """Expected problems (missing folder, bad URI, unreachable endpoint, bad list file) end the command
    with one readable line and exit code 2 instead of a traceback."""
    try:
        yield
    except (DatasetError, ValueError, OSError) as exc:
        err.print(Text(f"error: {exc}", style="red"), soft_wrap=True)
        raise typer.Exit(2) from exc


def _open(source: str, endpoint_url: str | None, unsigned: bool | None) -> Source:
    src = open_source(source, endpoint_url=endpoint_url, unsigned=unsigned)
    # Checked up front so an unreachable endpoint or a wrong folder is one error, not one per object.
    src.probe()
    return src


def _read_lists(ids: Path | None, file_list: Path | None) -> tuple[list[str] | None, dict[str, int] | None]:
    """The ids named by --ids and/or --file-list (both: those in both), and the file list's counts."""
    listed = read_id_list(ids) if ids is not None else None
    counts = read_udacity_file_list(file_list) if file_list is not None else None
    if counts is not None:
        listed = list(counts) if listed is None else [i for i in listed if i in counts]
    if listed is not None:
        listed = list(dict.fromkeys(listed))
    return listed, counts


def _choose_ids(
    source: Source,
    spec: SubsetSpec,
    ids: Path | None,
    file_list: Path | None,
    workers: int,
    progress: bool,
) -> list[str]:
    listed, listed_counts = _read_lists(ids, file_list)
    if listed is None:
        return [r.id for r in select(_load_all(source, workers, progress), spec)]
    if listed_counts is not None and spec.split is None:
        # Udacity's list carries each bin's count, so count filters and --limit need nothing from SOURCE.
        return [r.id for r in select([BinRecord(i, listed_counts[i]) for i in listed], spec)]
    if spec.split is None and spec.min_count is None and spec.max_count is None and spec.limit is None:
        # Nothing to filter on: bins missing from SOURCE are reported by the fetch itself, one by one.
        return listed
    return [r.id for r in select(_records_for_ids(source, listed, workers, progress), spec)]


def _load_all(source: Source, workers: int, progress: bool) -> list[BinRecord]:
    with _reading_bar(progress) as tick:
        return load_records(source, workers=workers, progress=tick)


def _records_for_ids(source: Source, ids: list[str], workers: int, progress: bool) -> list[BinRecord]:
    """Records of the listed ids that SOURCE has, warning about the others where that is cheap to know
    (a manifest or a local folder); on S3 without a manifest a missing one fails when its json is read."""
    manifest = source.read_manifest()
    available: set[str] | None = None
    if manifest is not None:
        available = {r["id"] for r in manifest if r.get("has_metadata", "1") == "1"}
    elif isinstance(source, LocalSource):
        available = set(source.list_ids())
    present = ids if available is None else [i for i in ids if i in available]
    if len(present) < len(ids):
        kept = set(present)
        missing = [i for i in ids if i not in kept]
        err.print(
            Text(
                f"warning: {len(missing):,} listed ids are not in {source.uri} "
                f"(e.g. {', '.join(missing[:5])}); leaving them out",
                style="yellow",
            ),
            soft_wrap=True,
        )
    if not present:
        return []
    with _reading_bar(progress) as tick:
        return load_records(source, ids=present, workers=workers, progress=tick)


@contextlib.contextmanager
def _reading_bar(progress: bool) -> Iterator[Callable[[int], None]]:
    # delay: with a manifest.csv nothing is read one by one and the bar never shows up.
    with tqdm(desc="reading metadata", unit="json", disable=not progress, delay=1.0) as bar:
        yield bar.update


def _fetch_table(report: FetchReport) -> Table:
    table = Table()
    table.add_column("")
    table.add_column("files", justify="right")
    table.add_column("bytes", justify="right")
    table.add_row("downloaded", f"{report.downloaded:,}", human_bytes(report.bytes_downloaded))
    table.add_row("skipped", f"{report.skipped:,}", human_bytes(report.bytes_skipped))
    table.add_row("failed", f"{report.failed:,}", "", style="red" if report.failed else None)
    table.add_row("complete bins", f"{report.complete_bins:,} of {report.requested_bins:,}", "")
    return table


def _histogram_table(hist: dict[int, int], title: str) -> Table:
    total = sum(hist.values())
    peak = max(hist.values(), default=0)
    table = Table(title=title, title_justify="left")
    table.add_column("count", justify="right")
    table.add_column("bins", justify="right")
    table.add_column("share", justify="right")
    table.add_column("", no_wrap=True)
    for count, n in hist.items():
        # At least one block, so a rare count is still visible next to a common one.
        bar = "█" * max(1, round(BAR_WIDTH * n / peak)) if peak else ""
        table.add_row(str(count), f"{n:,}", f"{n / total:.1%}", bar)
    return table
