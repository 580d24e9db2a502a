"""From a network and a dataset to logits and calibrated probabilities: the evaluation loop, softmax with a
temperature, and the temperature fit. Shared by training (model/training.py), evaluation and prediction.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from model.data import CachedImages
from model.preprocess import Preprocessing


def _loader(ds: Dataset, batch_size: int, shuffle: bool, workers: int, seed: int, cached: bool) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=0 if cached else workers,
        generator=gen,
        drop_last=False,
        persistent_workers=False,
    )


def to_input(
    images: torch.Tensor, pre: Preprocessing, device: torch.device, channels_last: bool
) -> torch.Tensor:
    x = images.to(device, non_blocking=True).float().div_(255.0)
    return x


def normalise(x: torch.Tensor, pre: Preprocessing, channels_last: bool) -> torch.Tensor:
    mean = torch.tensor(pre.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def with_autocast(device: torch.device, enabled: bool) -> Any:
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return torch.autocast(device_type="cpu", enabled=False)


@torch.no_grad()
def predict_logits(
    net: nn.Module,
    ds: Dataset,
    pre: Preprocessing,
    device: torch.device,
    batch_size: int = 128,
    channels_last: bool = True,
    amp: bool = True,
    tta: bool = False,
    progress: bool = False,
    workers: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits (N x C), class targets and true counts for a dataset; ``tta`` averages the four flips."""
    net.eval()
    cached = isinstance(ds, CachedImages)
    loader = _loader(ds, batch_size, False, workers, 0, cached)
    logits_out, targets_out, counts_out = [], [], []
    for images, targets, counts in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        x = normalise(to_input(images, pre, device, channels_last), pre, channels_last)
        with with_autocast(device, amp):
            logits = net(x).float()
            if tta:
                flips = net(x.flip(3)).float() + net(x.flip(2)).float() + net(x.flip(2, 3)).float()
                logits = (logits + flips) / 4
        logits_out.append(logits.cpu())
        targets_out.append(targets)
        counts_out.append(counts)
    if not logits_out:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return (
        torch.cat(logits_out).numpy(),
        torch.cat(targets_out).numpy(),
        torch.cat(counts_out).numpy(),
    )


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The softmax temperature minimising NLL on held-out logits (Guo et al. 2017's temperature scaling)."""
    if len(targets) == 0:
        return 1.0
    lg = torch.tensor(logits, dtype=torch.float64)
    tg = torch.tensor(targets, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(lg / log_t.exp(), tg)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.exp().item())
    return t if math.isfinite(t) and 0.05 < t < 20 else 1.0
