"""Choosing which bins to use: count ranges, id lists, Udacity's file_list.json, limits, stratified splits."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.abid import BinRecord, DatasetError
from model.classes import CountClasses


@dataclass(frozen=True)
class SubsetSpec:
    """Which bins to take. Every field is optional; they combine (intersection), then ``limit`` applies."""

    min_count: int | None = None
    max_count: int | None = None
    id_list: Path | None = None
    file_list: Path | None = None
    split: str | None = None
    limit: int | None = None
    seed: int = 0


def read_id_list(path: Path) -> list[str]:
    """One id per line (blank lines and ``#`` comments ignored). Ids stay strings: ``00121`` != ``121``."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError as exc:
        raise DatasetError(f"id list {path} does not exist") from exc
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def read_udacity_file_list(path: Path) -> dict[str, int]:
    """Udacity's ``file_list.json``: {"1": ["metadata/00001.json", ...], ...} -> {id: count}."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DatasetError(f"file list {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"file list {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"file list {path} must map counts to lists of metadata paths")
    out: dict[str, int] = {}
    for count, paths in data.items():
        if not count.isdigit() or not isinstance(paths, list):
            raise DatasetError(
                f"file list {path}: entry {count!r} must map a count to a list of metadata paths"
            )
        for p in paths:
            out[Path(p).stem] = int(count)
    return out


def select(records: Sequence[BinRecord], spec: SubsetSpec) -> list[BinRecord]:
    chosen = list(records)
    if spec.split is not None:
        if all(r.split is None for r in chosen):
            raise DatasetError(
                f"split {spec.split!r} asked for, but this dataset has no manifest.csv with a split column"
            )
        chosen = [r for r in chosen if r.split == spec.split]
    if spec.min_count is not None:
        chosen = [r for r in chosen if r.count >= spec.min_count]
    if spec.max_count is not None:
        chosen = [r for r in chosen if r.count <= spec.max_count]
    if spec.id_list is not None:
        keep = set(read_id_list(spec.id_list))
        chosen = [r for r in chosen if r.id in keep]
    if spec.file_list is not None:
        listed = read_udacity_file_list(spec.file_list)
        chosen = [r for r in chosen if r.id in listed]
    if spec.limit is not None and spec.limit < len(chosen):
        chosen = stratified_sample(chosen, spec.limit, spec.seed)
    return chosen


def stratified_sample(records: Sequence[BinRecord], n: int, seed: int) -> list[BinRecord]:
    """``n`` records keeping each count's share, deterministic for a seed."""
    by_count: dict[int, list[BinRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.id):
        by_count[r.count].append(r)
    rng = random.Random(seed)
    total = len(records)
    picked: list[BinRecord] = []
    remainders: list[tuple[float, int]] = []
    for count, group in sorted(by_count.items()):
        rng.shuffle(group)
        exact = n * len(group) / total
        take = int(exact)
        picked.extend(group[:take])
        remainders.append((exact - take, count))
    # Hand out what rounding left over to the counts that lost most to it.
    short = n - len(picked)
    taken = Counter(r.count for r in picked)
    for _, count in sorted(remainders, reverse=True)[:short]:
        picked.append(by_count[count][taken[count]])
    return sorted(picked, key=lambda r: r.id)


def stratified_split(
    records: Sequence[BinRecord], val_fraction: float = 0.15, test_fraction: float = 0.0, seed: int = 0
) -> tuple[list[BinRecord], list[BinRecord], list[BinRecord]]:
    """Train/val/test split that keeps each count's share in every part; deterministic for a seed."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1")
    by_count: dict[int, list[BinRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.id):
        by_count[r.count].append(r)
    rng = random.Random(seed)
    train: list[BinRecord] = []
    val: list[BinRecord] = []
    test: list[BinRecord] = []
    for _, group in sorted(by_count.items()):
        rng.shuffle(group)
        n_val = round(len(group) * val_fraction)
        n_test = round(len(group) * test_fraction)
        val.extend(group[:n_val])
        test.extend(group[n_val : n_val + n_test])
        train.extend(group[n_val + n_test :])
    train, val, test = (sorted(part, key=lambda r: r.id) for part in (train, val, test))
    return train, val, test


def apply_classes(records: Sequence[BinRecord], classes: CountClasses) -> list[BinRecord]:
    """Keep the bins the classes can represent (counts beyond an overflow class map to it, else drop)."""
    return [r for r in records if classes.class_of(r.count) is not None]


def histogram(records: Sequence[BinRecord]) -> dict[int, int]:
    return dict(sorted(Counter(r.count for r in records).items()))


def split_records(
    records: list[BinRecord], val_fraction: float, seed: int
) -> tuple[list[BinRecord], list[BinRecord]]:
    """The manifest's train/val split when the dataset has one (comparable figures), else a stratified one."""
    if any(r.split for r in records):
        train = [r for r in records if r.split == "train"]
        val = [r for r in records if r.split == "val"]
        if train and val:
            return train, val
    train, val, _ = stratified_split(records, val_fraction=val_fraction, seed=seed)
    return train, val
