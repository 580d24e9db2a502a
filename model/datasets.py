"""Several ABID-layout datasets trained on as one: ``binwatch train ../shared/abid ../shared/abid-extra``.

Invariants:

- The first dataset is the reference. Validation is its val split (its manifest's, else a stratified one)
  unless the caller asks for ``validate_on="each"``; the other datasets then add their own val splits.
  With ``"first"`` every bin of the other datasets is a training bin, whatever their manifests say.
- A bin id names one photo across all the datasets: an id found in two of them is refused, not guessed
  (the same folder given twice, or two copies of one bin, would otherwise be trained on twice or leak a
  val bin into training). ``BinRecord.dataset`` is the index of the dataset it came from.
- ``mix_weights`` weighs the training loss by count so that the training mix has the first dataset's
  class mix: the other datasets add examples of a count, never more prior for it. On one dataset every
  weight is 1, so a single-dataset run trains exactly as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from model.abid import BinRecord, DatasetError, MissingObjectError, ObjectStream, Source
from model.classes import CountClasses
from model.subsets import split_records

ValidateOn = Literal["first", "each"]
# A count the other datasets have far more of than the first still counts a little, and one they lack is
# not blown up past this: the weights stay in a range that keeps the loss's scale.
WEIGHT_RANGE = (0.05, 20.0)


class CombinedSource:
    """A ``model.abid.Source`` that reads each bin from the dataset it came from."""

    def __init__(self, sources: Sequence[Source], owner: dict[str, int]) -> None:
        self.sources = list(sources)
        self.owner = owner
        self.uri = " + ".join(s.uri for s in self.sources)

    def _source(self, bin_id: str) -> Source:
        try:
            return self.sources[self.owner[bin_id]]
        except KeyError:
            raise MissingObjectError(f"{bin_id!r} is in none of the datasets {self.uri}") from None

    def read_image(self, bin_id: str) -> bytes:
        return self._source(bin_id).read_image(bin_id)

    def read_metadata(self, bin_id: str) -> dict[str, Any]:
        return self._source(bin_id).read_metadata(bin_id)

    def list_ids(self) -> list[str]:
        return sorted(self.owner)

    # The layout-level calls describe the first (reference) dataset: the others are read bin by bin.
    def read_manifest(self) -> list[dict[str, str]] | None:
        return self.sources[0].read_manifest()

    def probe(self) -> None:
        for source in self.sources:
            source.probe()

    def object_size(self, folder: str, name: str) -> int | None:
        return self.sources[0].object_size(folder, name)

    def object_sizes(self, folder: str) -> dict[str, int]:
        return self.sources[0].object_sizes(folder)

    def open_object(self, folder: str, name: str) -> ObjectStream:
        return self.sources[0].open_object(folder, name)


@dataclass
class Combined:
    source: Source
    train: list[BinRecord]
    val: list[BinRecord]


def combine(
    parts: Sequence[tuple[Source, Sequence[BinRecord]]],
    val_fraction: float,
    seed: int,
    validate_on: ValidateOn = "first",
) -> Combined:
    """Split each dataset's bins, tag them with their dataset's index and join them into one source.

    ``parts``: (source, its selected records), the reference dataset first. One part is returned as it
    is (its own source, split as ``split_records`` splits it).
    """
    if not parts:
        raise ValueError("no dataset given")
    if validate_on not in ("first", "each"):
        raise ValueError(f"validate_on must be 'first' or 'each', got {validate_on!r}")
    if len(parts) == 1:
        source, records = parts[0]
        train, val = split_records(list(records), val_fraction, seed)
        return Combined(source, train, val)
    owner: dict[str, int] = {}
    train: list[BinRecord] = []
    val: list[BinRecord] = []
    for index, (source, records) in enumerate(parts):
        for record in records:
            if record.id in owner:
                first = parts[owner[record.id]][0].uri
                raise DatasetError(
                    f"bin {record.id!r} is in {first} and in {source.uri}: a bin may be in one dataset only "
                    "(is a folder given twice?)"
                )
            owner[record.id] = index
        tagged = [replace(r, dataset=index) for r in records]
        if index == 0 or validate_on == "each":
            part_train, part_val = split_records(tagged, val_fraction, seed)
        else:
            part_train, part_val = tagged, []
        train.extend(part_train)
        val.extend(part_val)
    return Combined(CombinedSource([s for s, _ in parts], owner), train, val)


def mix_weights(records: Sequence[BinRecord], classes: CountClasses) -> list[float] | None:
    """Per-class loss weights that give ``records`` the class mix of their first dataset's records.

    None when the records come from one dataset (nothing to balance). A class the first dataset has no
    bins of keeps weight 1.
    """
    if len({r.dataset for r in records}) < 2:
        return None
    every: Counter[int] = Counter()
    reference: Counter[int] = Counter()
    for r in records:
        index = classes.class_of(r.count)
        if index is None:
            continue
        every[index] += 1
        if r.dataset == 0:
            reference[index] += 1
    total, ref_total = sum(every.values()), sum(reference.values())
    if not total or not ref_total:
        return None
    low, high = WEIGHT_RANGE
    weights = []
    for index in range(classes.num_classes):
        if not every[index] or not reference[index]:
            weights.append(1.0)
            continue
        ratio = (reference[index] / ref_total) / (every[index] / total)
        weights.append(min(high, max(low, ratio)))
    return weights
