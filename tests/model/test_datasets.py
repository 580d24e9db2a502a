"""Several datasets as one (model/datasets.py), on the real ../shared/abid and ../shared/abid-extra."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from model.abid import BinRecord, DatasetError, load_records, open_source
from model.classes import CountClasses
from model.datasets import combine, mix_weights
from model.losses import CountingLoss
from model.subsets import SubsetSpec, select

K12 = CountClasses(min_count=0, max_count=12, overflow=True)


@pytest.fixture(scope="module")
def parts(abid_root: Path, abid_extra_root: Path) -> list:
    out = []
    for root in (abid_root, abid_extra_root):
        source = open_source(root)
        out.append((source, select(load_records(source), SubsetSpec(limit=400, seed=0))))
    return out


def test_validation_stays_on_the_first_datasets_val_split(parts: list) -> None:
    (abid, abid_records), (extra, extra_records) = parts
    combined = combine(parts, 0.15, 0)
    assert {r.dataset for r in combined.val} == {0}
    assert all(r.split == "val" for r in combined.val)  # ../shared/abid's manifest split, as for one dataset
    assert len(combined.val) == sum(r.split == "val" for r in abid_records)
    assert sum(r.dataset == 1 for r in combined.train) == len(extra_records)  # every extra bin trains
    # Each bin is read from the folder it came from.
    for record in (combined.train[0], next(r for r in combined.train if r.dataset == 1)):
        origin = (abid, extra)[record.dataset]
        assert combined.source.read_image(record.id) == origin.read_image(record.id)
    assert combined.source.uri == f"{abid.uri} + {extra.uri}"
    # "each": the extra photos (all in its manifest's train split) give a stratified val of their own
    each = combine(parts, 0.15, 0, "each")
    assert {r.dataset for r in each.val} == {0, 1}


def test_a_bin_in_two_datasets_is_refused(parts: list) -> None:
    with pytest.raises(DatasetError, match="is in .* and in .*: a bin may be in one dataset only"):
        combine([parts[0], parts[0]], 0.15, 0)
    with pytest.raises(ValueError, match="validate_on must be 'first' or 'each'"):
        combine(parts, 0.15, 0, "all")  # type: ignore[arg-type]


def test_the_loss_weights_give_the_training_mix_the_first_datasets_class_mix(parts: list) -> None:
    combined = combine(parts, 0.15, 0)
    weights = mix_weights(combined.train, K12)
    assert weights is not None and len(weights) == K12.num_classes
    # Weighted, the whole training set has the first dataset's class shares.
    every = Counter(K12.class_of(r.count) for r in combined.train)
    first = Counter(K12.class_of(r.count) for r in combined.train if r.dataset == 0)
    total = sum(weights[c] * n for c, n in every.items())
    for c, n in first.items():
        assert weights[c] * every[c] / total == pytest.approx(n / sum(first.values()), rel=1e-6)
    # The extra photos are mostly 1s: a 1 weighs less than a 0, which only the first dataset holds.
    assert weights[1] < 1 < weights[0]
    assert mix_weights([r for r in combined.train if r.dataset == 0], K12) is None  # one dataset


def test_class_weights_weigh_each_example_by_its_class_and_none_changes_nothing() -> None:
    logits = torch.randn(6, 4)
    targets = torch.tensor([0, 1, 1, 2, 3, 3])
    plain = CountingLoss(4, 0.1, 0.6, 0.02)
    ones = CountingLoss(4, 0.1, 0.6, 0.02, [1.0, 1.0, 1.0, 1.0])
    assert torch.allclose(plain(logits, targets), ones(logits, targets))
    # Weight 0 on class 3 is the loss of the other four examples alone.
    no_three = CountingLoss(4, 0.1, 0.6, 0.02, [1.0, 1.0, 1.0, 0.0])
    assert torch.allclose(no_three(logits, targets), plain(logits[:4], targets[:4]))
    hard = CountingLoss(4, class_weights=[2.0, 1.0, 1.0, 1.0])
    assert torch.allclose(
        hard(logits[:2], targets[:2]),
        (
            2 * torch.nn.functional.cross_entropy(logits[:1], targets[:1])
            + torch.nn.functional.cross_entropy(logits[1:2], targets[1:2])
        )
        / 3,
    )
    with pytest.raises(ValueError, match="3 class weights for 4 classes"):
        CountingLoss(4, class_weights=[1.0, 1.0, 1.0])


def test_records_remember_their_dataset() -> None:
    assert BinRecord("1", 2).dataset == 0
