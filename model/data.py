"""Turning ABID records into uint8 image tensors for training and evaluation, optionally cached in memory.

Images are decoded once, squashed to the training size and kept as uint8 (224px: 150 KB a bin, so the
9.7k-image train split is 1.5 GB). Augmentation and normalisation then run on whole batches, which on a
2-core CPU is far cheaper than decoding JPEGs again every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from model.abid import BinRecord, Source
from model.classes import CountClasses
from model.preprocess import Preprocessing, load_rgb, resize_square


class BinImages(Dataset):
    """(uint8 CxHxW image, class index, true count) for each record, decoded on access."""

    def __init__(
        self, source: Source, records: Sequence[BinRecord], classes: CountClasses, pre: Preprocessing
    ) -> None:
        self.source = source
        self.records = [r for r in records if classes.class_of(r.count) is not None]
        self.classes = classes
        self.pre = pre

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        rec = self.records[i]
        img = resize_square(load_rgb(self.source.read_image(rec.id), self.pre.image_size), self.pre)
        arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        target = self.classes.class_of(rec.count)
        assert target is not None
        return arr, target, rec.count


class CachedImages(Dataset):
    """Every image of a BinImages decoded once, in parallel, and held as one uint8 tensor."""

    def __init__(
        self, base: BinImages, workers: int = 2, progress: bool = True, desc: str = "decode"
    ) -> None:
        n, s = len(base), base.pre.image_size
        self.images = torch.empty((n, 3, s, s), dtype=torch.uint8)
        self.targets = torch.empty(n, dtype=torch.long)
        self.counts = torch.empty(n, dtype=torch.long)
        loader = DataLoader(base, batch_size=64, num_workers=workers, shuffle=False)
        pos = 0
        with tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for imgs, targets, counts in loader:
                k = len(targets)
                self.images[pos : pos + k] = imgs
                self.targets[pos : pos + k] = targets
                self.counts[pos : pos + k] = counts
                pos += k
                bar.update(k)
        self.records = base.records

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.images[i], int(self.targets[i]), int(self.counts[i])


def normalise_batch(images: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 NxCxHxW -> float, normalised with the preprocessing's mean and std."""
    x = images.float().div_(255.0)
    mean = torch.tensor(pre.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)
