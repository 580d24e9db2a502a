"""The verdict rule for bin checks (docs/verdicts.md explains it with examples).

Given the model's calibrated class probabilities for a photo and the bin's recorded count n:

1. Map n to the model's class for it: n itself inside the model's range, the overflow class ("6+") for
   n at or above the overflow start. ``p`` = the probability of that class.
2. Score the record. ``neighbour_ratio`` (the default, measured best in docs/verdicts.md): p divided by the
   larger probability of the two neighbouring classes (n - 1 and n + 1; one neighbour at either end of the
   range), or by ``FAR_WEIGHT`` times the largest probability of a farther class if that is larger.
   ``probability``: p itself (the rule before issue 22; checks stored without ``judged_by`` used it).
3. ``match`` if score >= match_threshold; ``mismatch`` if score < mismatch_threshold; ``uncertain`` in
   between. The thresholds come from the model version's operating points (model/operating_points.py) or
   from the deployment's settings.
4. A count the model has no class for (below its smallest class, or above its largest when it has no
   overflow class) gets ``uncertain`` with p = score = None: the model never saw such bins and its output
   says nothing about them either way.

Why the neighbour ratio: the commonest wrong record is off by one item, and a counter's probability mass
spreads over neighbouring counts. Reading p alone punishes a flat-but-right distribution as much as one
that prefers the neighbour; the ratio asks the question an operator asks, "is the recorded count more
likely than one more or one fewer?". Farther counts weigh a tenth: without them a photo that plainly
shows 5 would not contradict a recorded 2 whose neighbours are as unlikely as 2 itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from model.classes import CountClasses

VerdictName = Literal["match", "mismatch", "uncertain"]
ScoreName = Literal["neighbour_ratio", "probability"]
SCORES: tuple[ScoreName, ...] = ("neighbour_ratio", "probability")
DEFAULT_SCORE: ScoreName = "neighbour_ratio"
# A neighbour with (almost) no probability would make the ratio astronomically large; past this it says
# nothing more, and JSON clients get a readable number.
MAX_RATIO = 1e6
# How much a count two or more away from the record weighs against it, next to a neighbour (measured:
# docs/verdicts.md; 0.1 closes the far-count blind spot without costing off-by-one records caught).
FAR_WEIGHT = 0.1


@dataclass(frozen=True)
class Verdict:
    verdict: VerdictName
    # P(recorded count's class); None when the model has no class for the recorded count.
    probability_of_expected: float | None
    # The model class the recorded count falls in ("4", "6+"), or None.
    expected_label: str | None
    thresholds: dict[str, float]
    reason: str
    # The number the thresholds were applied to, and which score it is.
    score: float | None = None
    judged_by: ScoreName = "probability"


def _rival(index: int, probabilities: list[float]) -> tuple[int, float] | None:
    """The class the record is measured against and its weighted probability: the likelier neighbour, or
    a farther class at ``FAR_WEIGHT`` when that weighs more; None for a model with one class."""
    weighted = [
        (j, float(x) * (1.0 if abs(j - index) == 1 else FAR_WEIGHT))
        for j, x in enumerate(probabilities)
        if j != index
    ]
    if not weighted:
        return None
    return max(weighted, key=lambda pair: pair[1])


def record_score(index: int, probabilities: list[float], score: ScoreName) -> float:
    """The score of the record whose class is ``index`` among ``probabilities`` (in class order)."""
    p = float(probabilities[index])
    if score == "probability":
        return p
    rival = _rival(index, probabilities)
    if rival is None or rival[1] <= p / MAX_RATIO:
        return MAX_RATIO
    return p / rival[1]


def _against(index: int, probabilities: list[float], labels: list[str]) -> str:
    rival = _rival(index, probabilities)
    if rival is None or abs(rival[0] - index) == 1:
        return "its likelier neighbour"
    return f"a tenth of P({labels[rival[0]]}) = {probabilities[rival[0]]:.3f}"


def _reason(
    verdict: VerdictName,
    shown: str,
    p: float,
    value: float,
    score: ScoreName,
    low: float,
    high: float,
    against: str,
) -> str:
    if score == "probability":
        if verdict == "match":
            return f"P({shown}) = {p:.3f} >= match threshold {high}"
        if verdict == "mismatch":
            return f"P({shown}) = {p:.3f} < mismatch threshold {low}"
        return f"P({shown}) = {p:.3f} is between the thresholds {low} and {high}"
    ratio = f"{value:.2f}x" if value < 100 else "more than 100x"
    said = f"P({shown}) = {p:.3f}, {ratio} {against}"
    if verdict == "match":
        return f"the photo agrees with the record: {said} (match at {high:.3g}x or more)"
    if verdict == "mismatch":
        return f"the photo contradicts the record: {said} (mismatch below {low:.3g}x)"
    return f"unsure: {said}, between the mismatch point {low:.3g}x and the match point {high:.3g}x"


def judge(
    expected_count: int,
    probabilities: dict[str, float],
    classes: CountClasses,
    *,
    match_threshold: float,
    mismatch_threshold: float,
    score: ScoreName = "probability",
) -> Verdict:
    if expected_count < 0:
        raise ValueError(f"expected_count must be >= 0, got {expected_count}")
    if score not in SCORES:
        raise ValueError(f"unknown verdict score {score!r}; choose one of {', '.join(SCORES)}")
    thresholds = {"match": match_threshold, "mismatch": mismatch_threshold}
    index = classes.class_of(expected_count)
    if index is None:
        low, high = classes.labels[0], classes.labels[-1]
        return Verdict(
            verdict="uncertain",
            probability_of_expected=None,
            expected_label=None,
            thresholds=thresholds,
            reason=f"the model only knows counts {low}..{high}; it cannot judge a recorded {expected_count}",
            judged_by=score,
        )
    label = classes.labels[index]
    ordered = [float(probabilities.get(lbl, 0.0)) for lbl in classes.labels]
    p = ordered[index]
    value = record_score(index, ordered, score)
    shown = f"{expected_count} (class {label})" if label != str(expected_count) else str(expected_count)
    verdict: VerdictName
    if value >= match_threshold:
        verdict = "match"
    elif value < mismatch_threshold:
        verdict = "mismatch"
    else:
        verdict = "uncertain"
    against = _against(index, ordered, classes.labels)
    reason = _reason(verdict, shown, p, value, score, mismatch_threshold, match_threshold, against)
    return Verdict(verdict, p, label, thresholds, reason, value, score)


def classes_from_labels(labels: list[str]) -> CountClasses:
    """Rebuild CountClasses from a label list such as ["0", ..., "5", "6+"] (stored with each version)."""
    if not labels:
        raise ValueError("no labels")
    overflow = labels[-1].endswith("+")
    last = int(labels[-1].rstrip("+"))
    return CountClasses(min_count=int(labels[0]), max_count=last if overflow else last + 1, overflow=overflow)
