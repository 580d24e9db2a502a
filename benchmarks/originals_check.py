"""Does the model count a full-size ABID photo as it counts the 224-px copy it was validated on?

The issue's final check uses full-resolution photos that are not in ../shared, while training and the val
figures use the 224x224 `bin-images/`. ``../shared/abid/originals/`` holds full-size photos of 300 bins;
this script predicts each one of a split (default val: 50 photos, never trained on) both ways and prints
accuracy on each, how often the two predictions agree, and the mean absolute gap in expected count.

Run: .venv/bin/python benchmarks/originals_check.py CHECKPOINT [--split val]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from model.predictor import Predictor

ABID = Path(__file__).resolve().parents[1].parent / "shared" / "abid"


def expected_count(pred, classes) -> float:  # noqa: ANN001 - Prediction, CountClasses
    return sum(classes.count_of(i) * p for i, p in enumerate(pred.probabilities.values()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--abid", type=Path, default=ABID)
    ap.add_argument("--split", default="val", help="manifest split of the photos to use (val or train)")
    args = ap.parse_args()

    with (args.abid / "manifest.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["has_original"] == "1" and r["split"] == args.split]
    if not rows:
        raise SystemExit(f"no full-size photos of the {args.split!r} split in {args.abid}/originals")
    predictor = Predictor(args.checkpoint, device="cpu")
    classes = predictor.classes
    rows = [r for r in rows if classes.class_of(int(r["count"])) is not None]
    truth = np.array([classes.class_of(int(r["count"])) for r in rows])
    full = predictor.predict([args.abid / "originals" / f"{r['id']}.jpg" for r in rows])
    small = predictor.predict([args.abid / "bin-images" / f"{r['id']}.jpg" for r in rows])
    full_idx = np.array([predictor.labels.index(p.label) for p in full])
    small_idx = np.array([predictor.labels.index(p.label) for p in small])
    pairs = zip(full, small, strict=True)
    gap = np.mean([abs(expected_count(a, classes) - expected_count(b, classes)) for a, b in pairs])
    in05 = np.array([int(r["count"]) <= 5 for r in rows])
    print(f"{len(rows)} {args.split} bins with a full-size photo ({in05.sum()} with 0-5 items)")
    for name, idx in (("full-size photo", full_idx), ("224-px copy", small_idx)):
        hit = idx == truth
        print(f"accuracy, {name + ':':<20} {hit.mean():.1%} (0-5: {hit[in05].mean():.1%})")
    print(f"same predicted class:          {np.mean(full_idx == small_idx):.1%}")
    print(f"mean |expected count gap|:     {gap:.2f} items")


if __name__ == "__main__":
    main()
