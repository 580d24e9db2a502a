"""Counting metrics: accuracy, RMSE, accuracy within ±1, per-class accuracy, confusion matrix, calibration.

Figures are reported for the model's own classes and for the standard subsets the literature uses:
"0-5" (the ABID challenge: bins with 0..5 objects) and "1-5" (Udacity's capstone: 1..5 objects).
RMSE is computed on counts; an overflow prediction ("6+") counts as its lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from model.classes import CountClasses

STANDARD_SUBSETS: dict[str, tuple[int, int]] = {"0-5": (0, 5), "1-5": (1, 5)}


@dataclass
class SubsetMetrics:
    n: int
    accuracy: float
    rmse: float
    within_one: float
    per_class_accuracy: dict[str, float] = field(default_factory=dict)
    # The same bins scored with the argmax taken over the subset's classes only: "given that the bin holds
    # lo..hi items, how many?" — the question a model trained on that range alone (the ABID challenge's
    # baseline) answers. Reported beside the unrestricted figures, never instead of them.
    accuracy_restricted: float = float("nan")
    rmse_restricted: float = float("nan")


@dataclass
class Evaluation:
    n: int
    labels: list[str]
    accuracy: float
    rmse: float
    within_one: float
    ece: float
    nll: float
    per_class_accuracy: dict[str, float]
    confusion: list[list[int]]
    subsets: dict[str, SubsetMetrics]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def headline(self) -> dict[str, float]:
        """The handful of figures that describe a model at a glance."""
        out = {"accuracy": self.accuracy, "rmse": self.rmse, "within_one": self.within_one, "ece": self.ece}
        for name, sub in self.subsets.items():
            out[f"accuracy_{name}"] = sub.accuracy
            out[f"rmse_{name}"] = sub.rmse
            out[f"accuracy_{name}_restricted"] = sub.accuracy_restricted
        return out


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017)."""
    if len(targets) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    correct = (pred == targets).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def _subset(
    true_counts: np.ndarray,
    pred_counts: np.ndarray,
    probs: np.ndarray,
    classes: CountClasses,
    lo: int,
    hi: int,
) -> SubsetMetrics:
    mask = (true_counts >= lo) & (true_counts <= hi)
    t, p = true_counts[mask], pred_counts[mask]
    if len(t) == 0:
        return SubsetMetrics(0, float("nan"), float("nan"), float("nan"))
    per_class = {str(c): float((p[t == c] == c).mean()) for c in range(lo, hi + 1) if (t == c).any()}
    first = classes.class_of(lo)
    assert first is not None
    restricted = probs[mask][:, first : first + (hi - lo + 1)].argmax(axis=1) + lo
    return SubsetMetrics(
        n=int(len(t)),
        accuracy=float((t == p).mean()),
        rmse=float(math.sqrt(((t - p) ** 2).mean())),
        within_one=float((np.abs(t - p) <= 1).mean()),
        per_class_accuracy=per_class,
        accuracy_restricted=float((t == restricted).mean()),
        rmse_restricted=float(math.sqrt(((t - restricted) ** 2).mean())),
    )


def evaluate_predictions(probs: np.ndarray, true_counts: Sequence[int], classes: CountClasses) -> Evaluation:
    """Metrics from class probabilities (N x C) and the bins' true counts.

    Bins whose true count the classes cannot represent are left out (e.g. a 0-count bin for 1-5 classes).
    """
    counts = np.asarray(true_counts, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != len(counts) or probs.shape[1] != classes.num_classes:
        raise ValueError(
            f"probs must be N x {classes.num_classes}, got {probs.shape} for {len(counts)} counts"
        )
    target_idx = np.array([-1 if (c := classes.class_of(int(n))) is None else c for n in counts])
    keep = target_idx >= 0
    probs, counts, target_idx = probs[keep], counts[keep], target_idx[keep]
    pred_idx = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    pred_counts = np.array([classes.count_of(int(i)) for i in pred_idx], dtype=np.int64)
    # Truth clipped the same way as predictions: a 12-item bin is "6+" and 6 on the count scale.
    true_clipped = np.array([classes.count_of(int(i)) for i in target_idx], dtype=np.int64)

    k = classes.num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (target_idx, pred_idx), 1)
    labels = classes.labels
    per_class = {
        labels[i]: float(confusion[i, i] / confusion[i].sum()) for i in range(k) if confusion[i].sum() > 0
    }
    n = len(counts)
    eps = 1e-12
    nll = float(-np.log(probs[np.arange(n), target_idx] + eps).mean()) if n else float("nan")
    subsets = {}
    for name, (lo, hi) in STANDARD_SUBSETS.items():
        # A subset is only meaningful when the model can name each of its counts.
        if classes.min_count <= lo and (hi < classes.max_count):
            subsets[name] = _subset(counts, pred_counts, probs, classes, lo, hi)
    return Evaluation(
        n=int(n),
        labels=labels,
        accuracy=float((pred_idx == target_idx).mean()) if n else float("nan"),
        rmse=float(math.sqrt(((true_clipped - pred_counts) ** 2).mean())) if n else float("nan"),
        within_one=float((np.abs(true_clipped - pred_counts) <= 1).mean()) if n else float("nan"),
        ece=expected_calibration_error(probs, target_idx),
        nll=nll,
        per_class_accuracy=per_class,
        confusion=confusion.tolist(),
        subsets=subsets,
    )
