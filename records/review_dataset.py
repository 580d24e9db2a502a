"""Reviewed checks as a training dataset: the photos people counted in the console, served like ABID bins.

Invariants:

- An example is a reviewed check with a count: ``confirmed`` (the count the check judged) or ``counted``
  (the person's ``seen_count``). ``unusable`` photos never become examples; records/reviews.py decides
  which reviews count, this module only serves them.
- Its id is ``review-<check_id>``. ABID ids are digits, so reviewed examples and ABID bins share one record
  list and one source without colliding (an ABID dataset with such an id is refused); the check id keeps
  it stable across reloads, so a seed gives the same split every time.
- Its ``split`` is None: it is never in an ABID manifest, and worker/job_data.py gives the reviewed
  examples a stratified train/val split of their own.
- Its photo is read from the artifact store under the check's ``image_key``, as uploaded (any format
  ``model.preprocess.load_rgb`` decodes: JPEG, PNG, WebP, GIF, BMP, TIFF). Every other id is read from the
  wrapped ABID source, if there is one.
- model/ never imports this module (model is the bottom layer): training sees an object with ``uri`` and
  ``read_image`` like any ``model.abid.Source``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from model.abid import BinRecord, DatasetError, MissingObjectError, ObjectStream, Source
from records.artifacts import ArtifactNotFound, ArtifactStore
from records.job_spec import ReviewsSpec
from records.reviews import ReviewedExample, reviewed_examples

ID_PREFIX = "review-"


def example_id(check_id: int) -> str:
    return f"{ID_PREFIX}{check_id}"


def is_review_id(bin_id: str) -> bool:
    return bin_id.startswith(ID_PREFIX)


def load_examples(session: Session, spec: ReviewsSpec) -> list[ReviewedExample]:
    """The reviewed examples ``spec`` selects, oldest review first (records/reviews.py)."""
    return reviewed_examples(
        session, reviewed_after=spec.reviewed_after, reviewed_before=spec.reviewed_before, limit=spec.limit
    )


def as_records(examples: Sequence[ReviewedExample]) -> list[BinRecord]:
    """One ``BinRecord(review-<check_id>, count, split=None)`` per example, for training."""
    return [BinRecord(example_id(e.check_id), e.count) for e in examples]


class ReviewedPhotos:
    """A ``model.abid.Source`` that serves reviewed photos from the artifact store and everything else
    from ``base`` (the job's ABID dataset, or None when it trains on reviewed photos only)."""

    def __init__(
        self, store: ArtifactStore, examples: Sequence[ReviewedExample], base: Source | None = None
    ) -> None:
        self.store = store
        self.base = base
        self.examples = {example_id(e.check_id): e for e in examples}
        # For people (checkpoint metadata "data.source", logs); nothing parses it.
        self.uri = f"{base.uri} + reviewed checks" if base is not None else "reviewed checks"

    def _base(self, bin_id: str) -> Source:
        if self.base is None:
            raise MissingObjectError(
                f"{bin_id!r} is not a reviewed check of this job, and it has no dataset uri"
            )
        return self.base

    def _example(self, bin_id: str) -> ReviewedExample:
        try:
            return self.examples[bin_id]
        except KeyError:
            raise MissingObjectError(f"{bin_id!r} is not one of this job's reviewed checks") from None

    def read_image(self, bin_id: str) -> bytes:
        if not is_review_id(bin_id):
            return self._base(bin_id).read_image(bin_id)
        example = self._example(bin_id)
        try:
            return self.store.get_bytes(example.image_key)
        except ArtifactNotFound as exc:
            raise DatasetError(
                f"the photo of check {example.check_id} (bin {example.bin_id}), {example.image_key}, is gone "
                "from the artifact store; review that check as 'unusable' to leave it out"
            ) from exc

    def read_metadata(self, bin_id: str) -> dict[str, Any]:
        if not is_review_id(bin_id):
            return self._base(bin_id).read_metadata(bin_id)
        example = self._example(bin_id)
        return {"EXPECTED_QUANTITY": example.count, "check_id": example.check_id, "bin_id": example.bin_id}

    def list_ids(self) -> list[str]:
        return (self.base.list_ids() if self.base is not None else []) + list(self.examples)

    # The rest of the Source protocol describes the ABID part only: reviewed photos are not in ABID layout.
    def read_manifest(self) -> list[dict[str, str]] | None:
        return self.base.read_manifest() if self.base is not None else None

    def probe(self) -> None:
        if self.base is not None:
            self.base.probe()

    def object_size(self, folder: str, name: str) -> int | None:
        return self.base.object_size(folder, name) if self.base is not None else None

    def object_sizes(self, folder: str) -> dict[str, int]:
        return self.base.object_sizes(folder) if self.base is not None else {}

    def open_object(self, folder: str, name: str) -> ObjectStream:
        return self._base(f"{folder}/{name}").open_object(folder, name)
