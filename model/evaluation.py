"""Evaluating a checkpoint on a set of ABID records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.abid import BinRecord, Source
from model.checkpoint import load_model
from model.classes import CountClasses
from model.data import BinImages
from model.logits import predict_logits, softmax
from model.metrics import Evaluation, evaluate_predictions
from model.training import resolve_device


@dataclass
class CheckpointEvaluation:
    evaluation: Evaluation
    probabilities: np.ndarray
    counts: np.ndarray
    records: list[BinRecord]
    classes: CountClasses
    # The checkpoint's metadata (its operating points, temperature, training summary).
    metadata: dict[str, Any] = field(default_factory=dict)


def write_predictions(result: CheckpointEvaluation, path: str | Path) -> None:
    """One row per bin: id, true count, predicted label and count, confidence, P(true count's class).

    The rows a person reads to find a model's failure modes (sort by p_true)."""
    import csv

    labels = result.classes.labels
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "true_count", "predicted_label", "predicted_count", "confidence", "p_true"])
        for record, probs, count in zip(result.records, result.probabilities, result.counts, strict=True):
            idx = int(probs.argmax())
            true_idx = result.classes.class_of(int(count))
            p_true = float(probs[true_idx]) if true_idx is not None else float("nan")
            writer.writerow(
                [
                    record.id,
                    int(count),
                    labels[idx],
                    result.classes.count_of(idx),
                    f"{probs[idx]:.4f}",
                    f"{p_true:.4f}",
                ]
            )


def evaluate_checkpoint(
    checkpoint: str | Path,
    source: Source,
    records: Sequence[BinRecord],
    device: str = "auto",
    batch_size: int = 64,
    tta: bool = False,
    workers: int = 2,
    progress: bool = True,
) -> CheckpointEvaluation:
    loaded = load_model(checkpoint)
    dev = resolve_device(device)
    ds = BinImages(source, records, loaded.classes, loaded.preprocessing)
    if len(ds) == 0:
        raise ValueError("none of the selected bins has a count this model's classes can represent")
    logits, _targets, counts = predict_logits(
        loaded.net.to(dev),
        ds,
        loaded.preprocessing,
        dev,
        batch_size=batch_size,
        tta=tta,
        progress=progress,
        workers=workers,
    )
    probs = softmax(logits, float(loaded.metadata.get("temperature") or 1.0))
    return CheckpointEvaluation(
        evaluation=evaluate_predictions(probs, counts, loaded.classes),
        probabilities=probs,
        counts=counts,
        records=ds.records,
        classes=loaded.classes,
        metadata=dict(loaded.metadata),
    )
