"""How good are the verdicts a model's probabilities give? Figures for the ABID 0-5 bins of a labelled set.

For each bin holding 0..5 items we judge three records against its photo: the true count (a correct record)
and the true count - 1 and + 1 (records off by one item, the commonest real error). A good counter says
``match`` to the first and ``mismatch`` to the others. Reported:

- the verdict shares for correct and for off-by-one records at the given thresholds;
- the AUROC of P(recorded count) between correct and off-by-one records — how well the probability the
  verdict reads separates the two, whatever the thresholds;
- thresholds that hold a chosen false-alarm rate (correct records called ``mismatch``) and false-match rate
  (off-by-one records called ``match``), read off the same probabilities, and the four rates at a small
  grid of threshold pairs;
- for bins holding more than five items, the share the model calls "6 or more" (a full bin called "3" is a
  false alarm against its record).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from model.classes import CountClasses
from model.verdicts import judge

VERDICTS = ("match", "uncertain", "mismatch")
# Threshold pairs whose rates every report lists, so a deployment can pick its own trade-off.
TRADE_OFF_GRID = [(mm, m) for mm in (0.02, 0.05, 0.1) for m in (0.3, 0.35, 0.4, 0.5)]


@dataclass
class VerdictQuality:
    bins: int
    correct_records: int
    off_by_one_records: int
    thresholds: dict[str, float]
    # verdict -> share, for correct and for off-by-one records
    correct: dict[str, float]
    off_by_one: dict[str, float]
    auroc: float
    recommended: dict[str, float]
    # one row per (mismatch, match) pair of TRADE_OFF_GRID: the four rates below at those thresholds
    trade_offs: list[dict[str, float]]
    # bins with more than five items: how many of them, and the share whose argmax count is >= 6
    above_five: int
    above_five_called_six_or_more: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties counted half (Mann-Whitney U / n1 n2)."""
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    neg = np.sort(np.asarray(negatives, dtype=np.float64))
    pos = np.asarray(positives, dtype=np.float64)
    below = np.searchsorted(neg, pos, side="left")
    equal = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * equal).sum() / (len(pos) * len(neg)))


def _shares(verdicts: list[str]) -> dict[str, float]:
    n = max(1, len(verdicts))
    return {v: sum(1 for x in verdicts if x == v) / n for v in VERDICTS}


def verdict_quality(
    probs: np.ndarray,
    true_counts: np.ndarray,
    classes: CountClasses,
    *,
    match_threshold: float = 0.5,
    mismatch_threshold: float = 0.1,
    max_false_alarm: float = 0.05,
    max_false_match: float = 0.10,
) -> VerdictQuality:
    probs = np.asarray(probs, dtype=np.float64)
    counts = np.asarray(true_counts, dtype=np.int64)
    labels = classes.labels
    p_correct: list[float] = []
    p_off: list[float] = []
    v_correct: list[str] = []
    v_off: list[str] = []
    for row, count in zip(probs, counts, strict=True):
        if not 0 <= count <= 5:
            continue
        by_label = dict(zip(labels, row.tolist(), strict=True))
        for recorded in (count - 1, count, count + 1):
            if recorded < 0:
                continue
            v = judge(
                int(recorded),
                by_label,
                classes,
                match_threshold=match_threshold,
                mismatch_threshold=mismatch_threshold,
            )
            if v.probability_of_expected is None:
                continue
            if recorded == count:
                p_correct.append(v.probability_of_expected)
                v_correct.append(v.verdict)
            else:
                p_off.append(v.probability_of_expected)
                v_off.append(v.verdict)
    pc, po = np.array(p_correct), np.array(p_off)
    # Mismatch below the max_false_alarm quantile of correct records' p; match at or above the point that
    # lets at most max_false_match of off-by-one records through.
    mismatch_at = float(np.quantile(pc, max_false_alarm, method="lower")) if len(pc) else float("nan")
    match_at = float(np.quantile(po, 1 - max_false_match, method="higher")) if len(po) else float("nan")
    match_at = max(match_at, mismatch_at)
    recommended = {
        "mismatch_threshold": round(mismatch_at, 3),
        "match_threshold": round(match_at, 3),
        "false_alarm": float((pc < mismatch_at).mean()) if len(pc) else float("nan"),
        "false_match": float((po >= match_at).mean()) if len(po) else float("nan"),
        "correct_match": float((pc >= match_at).mean()) if len(pc) else float("nan"),
        "off_by_one_mismatch": float((po < mismatch_at).mean()) if len(po) else float("nan"),
    }
    trade_offs = [
        {
            "mismatch_threshold": mm,
            "match_threshold": m,
            "correct_match": float((pc >= m).mean()) if len(pc) else float("nan"),
            "false_alarm": float((pc < mm).mean()) if len(pc) else float("nan"),
            "off_by_one_mismatch": float((po < mm).mean()) if len(po) else float("nan"),
            "false_match": float((po >= m).mean()) if len(po) else float("nan"),
        }
        for mm, m in TRADE_OFF_GRID
    ]
    above = counts > 5
    if above.any():
        predicted = np.array([classes.count_of(int(i)) for i in probs[above].argmax(axis=1)])
        called = float((predicted >= 6).mean())
    else:
        called = float("nan")
    return VerdictQuality(
        bins=int(((counts >= 0) & (counts <= 5)).sum()),
        correct_records=len(pc),
        off_by_one_records=len(po),
        thresholds={"match": match_threshold, "mismatch": mismatch_threshold},
        correct=_shares(v_correct),
        off_by_one=_shares(v_off),
        auroc=auroc(pc, po),
        recommended=recommended,
        trade_offs=trade_offs,
        above_five=int(above.sum()),
        above_five_called_six_or_more=called,
    )
