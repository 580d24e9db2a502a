"""The verdict rule (docs/verdicts.md): probability of the recorded count's class against two thresholds."""

from __future__ import annotations

import pytest

from model.classes import CountClasses
from model.verdicts import classes_from_labels, judge

OVERFLOW = CountClasses()  # 0..5, "6+"
UDACITY = CountClasses.udacity()  # 1..5, no overflow
DROP = CountClasses(min_count=0, max_count=6, overflow=False)  # 0..5, counts above have no class


def probs(classes: CountClasses, **by_label: float) -> dict[str, float]:
    named = {label.replace("+", "_plus"): label for label in classes.labels}
    out = {label: 0.0 for label in classes.labels}
    for key, value in by_label.items():
        out[named[key.lstrip("c")]] = value
    rest = 1.0 - sum(out.values())
    free = [lbl for lbl in out if out[lbl] == 0.0]
    for lbl in free:
        out[lbl] = rest / len(free)
    return out


@pytest.mark.parametrize(
    ("classes", "recorded", "probabilities", "verdict", "p", "label"),
    [
        # argmax agrees with the record
        (OVERFLOW, 4, probs(OVERFLOW, c4=0.8), "match", 0.8, "4"),
        # the model leans to 3 but gives the record 0.45: no contradiction, not a confident match either
        (OVERFLOW, 4, probs(OVERFLOW, c3=0.5, c4=0.45), "uncertain", 0.45, "4"),
        # the photo clearly shows something else
        (OVERFLOW, 2, probs(OVERFLOW, c5=0.9, c2=0.02), "mismatch", 0.02, "2"),
        # recorded 12 vs predicted "6+" is a match: 12 falls in the overflow class
        (OVERFLOW, 12, probs(OVERFLOW, c6_plus=0.9), "match", 0.9, "6+"),
        (OVERFLOW, 6, probs(OVERFLOW, c6_plus=0.9), "match", 0.9, "6+"),
        # recorded 12 while the model is sure the bin holds 1 item: mismatch
        (OVERFLOW, 12, probs(OVERFLOW, c1=0.95, c6_plus=0.001), "mismatch", 0.001, "6+"),
        # an empty bin recorded as empty
        (OVERFLOW, 0, probs(OVERFLOW, c0=0.7), "match", 0.7, "0"),
        # thresholds are inclusive for match, exclusive for mismatch
        (OVERFLOW, 3, probs(OVERFLOW, c3=0.5), "match", 0.5, "3"),
        (OVERFLOW, 3, probs(OVERFLOW, c3=0.1), "uncertain", 0.1, "3"),
        # counts the model has no class for: uncertain, no probability
        (UDACITY, 0, probs(UDACITY, c1=0.9), "uncertain", None, None),
        (DROP, 9, probs(DROP, c5=0.9), "uncertain", None, None),
        (UDACITY, 5, probs(UDACITY, c5=0.6), "match", 0.6, "5"),
    ],
)
def test_verdict_table(
    classes: CountClasses,
    recorded: int,
    probabilities: dict[str, float],
    verdict: str,
    p: float | None,
    label: str | None,
) -> None:
    result = judge(recorded, probabilities, classes, match_threshold=0.5, mismatch_threshold=0.1)
    assert result.verdict == verdict, result.reason
    assert result.expected_label == label
    if p is None:
        assert result.probability_of_expected is None
        assert "cannot judge" in result.reason
    else:
        assert result.probability_of_expected == pytest.approx(p)
    assert result.thresholds == {"match": 0.5, "mismatch": 0.1}


def test_thresholds_are_configurable() -> None:
    p = probs(OVERFLOW, c4=0.3)
    assert judge(4, p, OVERFLOW, match_threshold=0.5, mismatch_threshold=0.1).verdict == "uncertain"
    assert judge(4, p, OVERFLOW, match_threshold=0.25, mismatch_threshold=0.1).verdict == "match"
    assert judge(4, p, OVERFLOW, match_threshold=0.9, mismatch_threshold=0.4).verdict == "mismatch"


def test_negative_counts_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        judge(-1, probs(OVERFLOW), OVERFLOW, match_threshold=0.5, mismatch_threshold=0.1)


@pytest.mark.parametrize("classes", [OVERFLOW, UDACITY, DROP, CountClasses.overflow_at(3)])
def test_classes_round_trip_through_labels(classes: CountClasses) -> None:
    assert classes_from_labels(classes.labels) == classes


def test_settings_refuse_inverted_thresholds() -> None:
    from settings import Settings

    with pytest.raises(ValueError, match="mismatch_threshold <= match_threshold"):
        Settings(_env_file=None, match_threshold=0.2, mismatch_threshold=0.3)  # type: ignore[call-arg]
