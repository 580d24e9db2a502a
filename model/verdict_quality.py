"""How good are the verdicts a model's probabilities give? Figures for the ABID 0-5 bins of a labelled set.

For each bin holding 0..5 items we judge three records against its photo: the true count (a correct record)
and the true count - 1 and + 1 (records off by one item, the commonest real error). A good counter says
``match`` to the first and ``mismatch`` to the others. Reported:

- the verdict shares for correct and for off-by-one records at the given thresholds;
- the AUROC of the verdict score (model/verdicts.py: the neighbour ratio by default, or P(recorded count))
  between correct and off-by-one records — how well the number the verdict reads separates the two,
  whatever the thresholds;
- thresholds that hold a chosen false-alarm rate (correct records called ``mismatch``) and false-match rate
  (off-by-one records called ``match``), read off the same scores, and a risk-coverage table: at each
  false-alarm rate, the share of off-by-one records caught and the share of records given a definite
  verdict (model/operating_points.py stores the same thresholds with a model version);
- for bins holding more than five items, the share the model calls "6 or more" (a full bin called "3" is a
  false alarm against its record).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from model.classes import CountClasses
from model.verdicts import DEFAULT_SCORE, ScoreName, judge

VERDICTS = ("match", "uncertain", "mismatch")
# False-alarm rates every report lists: the risk-coverage table's rows.
RISK_GRID = (0.01, 0.02, 0.05, 0.10, 0.20)
MAX_FALSE_MATCH = 0.10


@dataclass
class VerdictQuality:
    bins: int
    correct_records: int
    off_by_one_records: int
    score: str
    thresholds: dict[str, float]
    # verdict -> share, for correct and for off-by-one records
    correct: dict[str, float]
    off_by_one: dict[str, float]
    auroc: float
    recommended: dict[str, float]
    # one row per false-alarm rate of RISK_GRID, with match at the recommended point (risk_coverage)
    risk_coverage: list[dict[str, float]]
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


def mismatch_point(correct: np.ndarray, max_false_alarm: float) -> float:
    """The largest observed score below which at most ``max_false_alarm`` of correct records fall."""
    return float(np.quantile(correct, max_false_alarm, method="lower")) if len(correct) else float("nan")


def match_point(off_by_one: np.ndarray, max_false_match: float) -> float:
    """A score at or above which at most about ``max_false_match`` of off-by-one records fall."""
    if not len(off_by_one):
        return float("nan")
    return float(np.quantile(off_by_one, 1 - max_false_match, method="higher"))


def rates(correct: np.ndarray, off_by_one: np.ndarray, mismatch: float, match: float) -> dict[str, float]:
    """What thresholds do to correct and off-by-one records: the four rates and the decided shares."""
    nan = float("nan")
    pc, po = correct, off_by_one
    return {
        "false_alarm": float((pc < mismatch).mean()) if len(pc) else nan,
        "caught": float((po < mismatch).mean()) if len(po) else nan,
        "correct_match": float((pc >= match).mean()) if len(pc) else nan,
        "false_match": float((po >= match).mean()) if len(po) else nan,
        "decided_correct": float(((pc < mismatch) | (pc >= match)).mean()) if len(pc) else nan,
        "decided_off_by_one": float(((po < mismatch) | (po >= match)).mean()) if len(po) else nan,
    }


def risk_coverage(
    correct: np.ndarray, off_by_one: np.ndarray, match: float, grid: tuple[float, ...] = RISK_GRID
) -> list[dict[str, float]]:
    """At each false-alarm rate of ``grid``: the mismatch point and what it catches, match fixed."""
    rows = []
    for target in grid:
        mismatch = min(mismatch_point(correct, target), match)
        rows.append(
            {
                "max_false_alarm": target,
                "mismatch_threshold": mismatch,
                **rates(correct, off_by_one, mismatch, match),
            }
        )
    return rows


def record_scores(
    probs: np.ndarray, true_counts: np.ndarray, classes: CountClasses, score: ScoreName = DEFAULT_SCORE
) -> tuple[np.ndarray, np.ndarray]:
    """The verdict scores of the correct records and of the off-by-one records of the 0-5 bins."""
    correct, off = _judged(probs, true_counts, classes, score, 1.0, 0.0)[:2]
    return correct, off


def _judged(
    probs: np.ndarray,
    true_counts: np.ndarray,
    classes: CountClasses,
    score: ScoreName,
    match_threshold: float,
    mismatch_threshold: float,
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    labels = classes.labels
    s_correct: list[float] = []
    s_off: list[float] = []
    v_correct: list[str] = []
    v_off: list[str] = []
    for row, count in zip(np.asarray(probs, dtype=np.float64), np.asarray(true_counts), strict=True):
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
                score=score,
            )
            if v.score is None:
                continue
            if recorded == count:
                s_correct.append(v.score)
                v_correct.append(v.verdict)
            else:
                s_off.append(v.score)
                v_off.append(v.verdict)
    return np.array(s_correct), np.array(s_off), v_correct, v_off


def verdict_quality(
    probs: np.ndarray,
    true_counts: np.ndarray,
    classes: CountClasses,
    *,
    match_threshold: float = 0.5,
    mismatch_threshold: float = 0.1,
    score: ScoreName = DEFAULT_SCORE,
    max_false_alarm: float = 0.05,
    max_false_match: float = MAX_FALSE_MATCH,
) -> VerdictQuality:
    probs = np.asarray(probs, dtype=np.float64)
    counts = np.asarray(true_counts, dtype=np.int64)
    pc, po, v_correct, v_off = _judged(probs, counts, classes, score, match_threshold, mismatch_threshold)
    # Mismatch below the max_false_alarm quantile of correct records' scores; match at or above the point
    # that lets at most max_false_match of off-by-one records through.
    mismatch_at = mismatch_point(pc, max_false_alarm)
    match_at = max(match_point(po, max_false_match), mismatch_at)
    measured = rates(pc, po, mismatch_at, match_at)
    recommended = {
        "mismatch_threshold": mismatch_at,
        "match_threshold": match_at,
        "false_alarm": measured["false_alarm"],
        "false_match": measured["false_match"],
        "correct_match": measured["correct_match"],
        "off_by_one_mismatch": measured["caught"],
    }
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
        score=score,
        thresholds={"match": match_threshold, "mismatch": mismatch_threshold},
        correct=_shares(v_correct),
        off_by_one=_shares(v_off),
        auroc=auroc(pc, po),
        recommended=recommended,
        risk_coverage=risk_coverage(pc, po, match_at),
        above_five=int(above.sum()),
        above_five_called_six_or_more=called,
    )
