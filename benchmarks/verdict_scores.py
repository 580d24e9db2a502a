"""Candidate verdict scores side by side, for one checkpoint on ../shared/abid's val split (docs/verdicts.md).

For every bin holding 0-5 items: the true record (correct) and the records one off (off-by-one), scored by

- ``probability``: P(recorded count), the rule before issue 22;
- ``neighbour_ratio``: P(r) / max(P(r - 1), P(r + 1), a tenth of any farther count's probability), the
  default since (model/verdicts.py, the service's own function);
- ``neighbours_only``: P(r) / max(P(r - 1), P(r + 1)), without the farther counts;
- ``neighbour_sum``: P(r) / (P(r - 1) + P(r + 1));
- ``margin``: P(r) / the largest other class's probability;

each without and with flip averaging (the four flips, four forward passes); and a learned score, a
logistic regression over the counter's outputs (log P(r), the log neighbour ratio, expected count - r,
argmax - r, log P(r - 1), log P(r + 1), entropy; never r itself, see docs/verdicts.md), 5-fold
cross-validated over the bins. Reported: AUROC, the share of
off-by-one records caught at the threshold that calls at most 5% and 2% of correct records mismatch, and
the share of checks left uncertain at the score's operating points (model/operating_points.py).

Run: .venv/bin/python benchmarks/verdict_scores.py CHECKPOINT [../shared/abid]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model.abid import load_records, open_source
from model.evaluation import evaluate_checkpoint
from model.subsets import SubsetSpec, select
from model.verdict_quality import auroc, match_point, mismatch_point
from model.verdicts import record_score

Score = Callable[[np.ndarray, int], float]
EPS = 1e-12


def _neighbours(p: np.ndarray, r: int) -> list[float]:
    return [float(p[j]) for j in (r - 1, r + 1) if 0 <= j < len(p)]


SCORES: dict[str, Score] = {
    "probability": lambda p, r: float(p[r]),
    "neighbour_ratio": lambda p, r: record_score(r, [float(x) for x in p], "neighbour_ratio"),
    "neighbours_only": lambda p, r: float(p[r]) / (max(_neighbours(p, r)) + EPS),
    "neighbour_sum": lambda p, r: float(p[r]) / (sum(_neighbours(p, r)) + EPS),
    "margin": lambda p, r: float(p[r]) / (float(np.delete(p, r).max()) + EPS),
}


def records(probs: np.ndarray, counts: np.ndarray, score: Score) -> tuple[np.ndarray, np.ndarray]:
    correct, off = [], []
    for p, c in zip(probs, counts, strict=True):
        if not 0 <= c <= 5:
            continue
        for r in (c - 1, c, c + 1):
            if r >= 0:
                (correct if r == c else off).append(score(p, int(r)))
    return np.array(correct), np.array(off)


def row(name: str, correct: np.ndarray, off: np.ndarray) -> str:
    cells = [name, f"{auroc(correct, off):.3f}"]
    for rate in (0.05, 0.02):
        cells.append(f"{(off < mismatch_point(correct, rate)).mean():.1%}")
    match = max(match_point(off, 0.10), mismatch_point(correct, 0.05))
    low = mismatch_point(correct, 0.05)
    decided = np.concatenate([(correct < low) | (correct >= match), (off < low) | (off >= match)])
    cells.append(f"{1 - ((correct < low) | (correct >= match)).mean():.1%}")
    cells.append(f"{1 - decided.mean():.1%}")
    return "| " + " | ".join(cells) + " |"


def _features(p: np.ndarray, r: int) -> list[float]:
    lp = np.log(p + 1e-9)
    expected = float((p * np.arange(len(p))).sum())
    ratio = SCORES["neighbour_ratio"](p, r)
    return [
        float(lp[r]),
        float(np.log(ratio + 1e-9)),
        expected - r,
        float(p.argmax()) - r,
        float(lp[r - 1]) if r > 0 else -20.0,
        float(lp[r + 1]) if r + 1 < len(p) else -20.0,
        float(-(p * lp).sum()),
    ]


def _logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> np.ndarray:
    """Newton's method on the L2-regularised log loss; returns the weights (bias last)."""
    xb = np.c_[x, np.ones(len(x))]
    w = np.zeros(xb.shape[1])
    for _ in range(50):
        s = 1 / (1 + np.exp(-(xb @ w)))
        hessian = (xb * (s * (1 - s))[:, None]).T @ xb + l2 * np.eye(len(w))
        w -= np.linalg.solve(hessian, xb.T @ (s - y) + l2 * w)
    return w


def learned(probs: np.ndarray, counts: np.ndarray, folds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validated scores of the correct and the off-by-one records (folds split by bin)."""
    x, y, bins = [], [], []
    for i, (p, c) in enumerate(zip(probs, counts, strict=True)):
        if not 0 <= c <= 5:
            continue
        for r in (c - 1, c, c + 1):
            if r >= 0:
                x.append(_features(p, int(r)))
                y.append(1.0 if r == c else 0.0)
                bins.append(i)
    x, y, bins = np.array(x), np.array(y), np.array(bins)
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    order = np.random.default_rng(0).permutation(np.unique(bins))
    score = np.zeros(len(y))
    for fold in np.array_split(order, folds):
        held = np.isin(bins, fold)
        w = _logistic(x[~held], y[~held])
        score[held] = np.c_[x[held], np.ones(held.sum())] @ w
    return score[y == 1], score[y == 0]


def main(checkpoint: str, data: str = "../shared/abid") -> None:
    source = open_source(data)
    val = select(load_records(source), SubsetSpec(split="val"))
    print(f"{checkpoint} on the val split of {data} ({len(val)} bins)\n")
    print(
        "| score | AUROC | caught at 5% false alarms | caught at 2% | uncertain (correct records) "
        "| uncertain (all records) |\n|---|---|---|---|---|---|"
    )
    for tta in (False, True):
        result = evaluate_checkpoint(Path(checkpoint), source, val, tta=tta, progress=False)
        for name, score in SCORES.items():
            correct, off = records(result.probabilities, result.counts, score)
            print(row(f"{name}{' + 4 flips' if tta else ''}", correct, off))
        if not tta:
            print(
                row(
                    "learned (logistic, 5-fold cross-validated)",
                    *learned(result.probabilities, result.counts),
                )
            )


if __name__ == "__main__":
    main(*sys.argv[1:])
