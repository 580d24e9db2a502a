"""The verdict rule for bin checks (docs/verdicts.md explains it with examples).

Given the model's calibrated class probabilities for a photo and the bin's recorded count n:

1. Map n to the model's class for it: n itself inside the model's range, the overflow class ("6+") for
   n at or above the overflow start. ``p`` = the probability of that class.
2. ``match`` if p >= match_threshold; ``mismatch`` if p < mismatch_threshold; ``uncertain`` in between.
3. A count the model has no class for (below its smallest class, or above its largest when it has no
   overflow class) gets ``uncertain`` with p = None: the model never saw such bins and its output says
   nothing about them either way.

The rule reads the probability of the *recorded* count, not the argmax: a photo where the model splits
0.45 / 0.40 between 3 and 4 does not contradict a recorded 4, and a 12 recorded against "6+" is a match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from model.classes import CountClasses

VerdictName = Literal["match", "mismatch", "uncertain"]


@dataclass(frozen=True)
class Verdict:
    verdict: VerdictName
    # P(recorded count's class); None when the model has no class for the recorded count.
    probability_of_expected: float | None
    # The model class the recorded count falls in ("4", "6+"), or None.
    expected_label: str | None
    thresholds: dict[str, float]
    reason: str


def judge(
    expected_count: int,
    probabilities: dict[str, float],
    classes: CountClasses,
    *,
    match_threshold: float,
    mismatch_threshold: float,
) -> Verdict:
    if expected_count < 0:
        raise ValueError(f"expected_count must be >= 0, got {expected_count}")
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
        )
    label = classes.labels[index]
    p = float(probabilities.get(label, 0.0))
    shown = f"{expected_count} (class {label})" if label != str(expected_count) else str(expected_count)
    if p >= match_threshold:
        verdict: VerdictName = "match"
        reason = f"P({shown}) = {p:.3f} >= match threshold {match_threshold}"
    elif p < mismatch_threshold:
        verdict = "mismatch"
        reason = f"P({shown}) = {p:.3f} < mismatch threshold {mismatch_threshold}"
    else:
        verdict = "uncertain"
        reason = f"P({shown}) = {p:.3f} is between the thresholds {mismatch_threshold} and {match_threshold}"
    return Verdict(verdict, p, label, thresholds, reason)


def classes_from_labels(labels: list[str]) -> CountClasses:
    """Rebuild CountClasses from a label list such as ["0", ..., "5", "6+"] (stored with each version)."""
    if not labels:
        raise ValueError("no labels")
    overflow = labels[-1].endswith("+")
    last = int(labels[-1].rstrip("+"))
    return CountClasses(min_count=int(labels[0]), max_count=last if overflow else last + 1, overflow=overflow)
