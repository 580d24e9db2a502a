"""Inference cost of two counting models side by side, on the same cores, in one run (ratios, not absolutes).

The shared 2-core machine is noisy, so the two models are timed alternately, ``--repeat`` times each, and
the table shows min / median / max of each figure and the ratio of the medians. Figures: model-only
images/s at batch 1 and 16 (preprocessed tensors), and end to end from JPEG bytes of full-size ABID photos
(decode + preprocess + forward) at batch 1 and 16.

A model is a checkpoint path, or ``ARCH@SIZE`` (e.g. ``resnet18@112``, the cpu-quick shape) for an
untrained network of that shape: speed does not depend on the weights, so the baseline needs no training run.

Run: .venv/bin/python benchmarks/bench_models.py bundled resnet18@112 --repeat 5
(``bundled`` is the default model that ships with binwatch.)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from model.bundle import materialise
from model.checkpoint import save_checkpoint
from model.config import TrainConfig
from model.network import build_network
from model.predictor import Predictor

ABID = Path(__file__).resolve().parents[1].parent / "shared" / "abid"


def checkpoint_for(spec: str, tmp: Path) -> Path:
    if spec == "bundled":
        return materialise(tmp / "bundled")
    if "@" in spec:
        arch, size = spec.split("@")
        cfg = TrainConfig(architecture=arch, image_size=int(size), k=12)  # type: ignore[arg-type]
        classes = cfg.count_classes()
        net = build_network(arch, classes.num_classes, image_size=int(size))
        meta = {
            "architecture": arch,
            "classes": classes.to_dict(),
            "labels": classes.labels,
            "preprocessing": cfg.preprocessing().to_dict(),
            "temperature": 1.0,
        }
        path = tmp / spec.replace("@", "-") / "model.pt"
        save_checkpoint(path, net.state_dict(), meta)
        return path
    return Path(spec)


def rate(step: Callable[[Any], object], items: Sequence[Any], batch: int) -> float:
    """Images per second of ``step`` over ``items`` in whole batches of ``batch``."""
    t0 = time.perf_counter()
    for i in range(0, len(items) - batch + 1, batch):
        step(items[i : i + batch])
    return (len(items) // batch) * batch / (time.perf_counter() - t0)


def measure(predictor: Predictor, blobs: list[bytes], tensors: torch.Tensor) -> dict[str, float]:
    return {
        "model img/s, batch 1": rate(predictor.predict_tensors, tensors, 1),
        "model img/s, batch 16": rate(predictor.predict_tensors, tensors, 16),
        "end to end img/s, batch 1": rate(predictor.predict, blobs, 1),
        "end to end img/s, batch 16": rate(predictor.predict, blobs, 16),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="checkpoint, 'bundled', or ARCH@SIZE")
    ap.add_argument("baseline", help="checkpoint, 'bundled', or ARCH@SIZE (e.g. resnet18@112)")
    ap.add_argument("--abid", type=Path, default=ABID)
    ap.add_argument("--n", type=int, default=48, help="full-size photos per measurement")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    blobs = [p.read_bytes() for p in sorted((args.abid / "originals").glob("*.jpg"))[: args.n]]
    with tempfile.TemporaryDirectory() as tmp:
        names = [args.model, args.baseline]
        predictors = [Predictor(checkpoint_for(spec, Path(tmp)), device="cpu") for spec in names]
        inputs = [torch.stack([p.preprocess(b) for b in blobs]) for p in predictors]
        for p, x in zip(predictors, inputs, strict=True):
            p.predict_tensors(x[:16])  # warm-up
        results: list[list[dict[str, float]]] = [[], []]
        for _ in range(args.repeat):
            for i, (p, x) in enumerate(zip(predictors, inputs, strict=True)):
                results[i].append(measure(p, blobs, x))
    threads = torch.get_num_threads()
    print(f"torch threads {threads}, {len(blobs)} full-size ABID photos, {args.repeat} rounds")
    for spec, p in zip(names, predictors, strict=True):
        params = sum(t.numel() for t in p.net.parameters()) / 1e6
        arch, size = p.metadata["architecture"], p.preprocessing.image_size
        print(f"  {spec}: {arch} at {size}px, {params:.1f}M params")
    print(f"| figure | {names[0]} min / median / max | {names[1]} min / median / max | ratio of medians |")
    print("|---|---|---|---|")
    for key in results[0][0]:
        cells, medians = [], []
        for runs in results:
            values = [r[key] for r in runs]
            medians.append(statistics.median(values))
            cells.append(f"{min(values):.1f} / {medians[-1]:.1f} / {max(values):.1f}")
        print(f"| {key} | {cells[0]} | {cells[1]} | {medians[0] / medians[1]:.2f} |")


if __name__ == "__main__":
    main()
