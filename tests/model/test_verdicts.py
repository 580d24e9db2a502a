"""The verdict rule (docs/verdicts.md): probability of the recorded count's class against two thresholds."""

from __future__ import annotations

import pytest

from model.classes import CountClasses
from model.verdicts import MAX_RATIO, classes_from_labels, judge, record_score

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


# -- the exact reasons and edges (written after a mutation-testing pass, docs/testing.md)

K6 = CountClasses()  # 0..5 and "6+"
T = {"match_threshold": 0.6, "mismatch_threshold": 0.2}


def test_each_verdict_gives_its_reason_in_full() -> None:
    probs = {"0": 0.05, "1": 0.1, "2": 0.7, "3": 0.15}
    match = judge(2, probs, K6, **T)
    assert (match.verdict, match.reason) == ("match", "P(2) = 0.700 >= match threshold 0.6")
    assert match.expected_label == "2" and match.probability_of_expected == 0.7
    mismatch = judge(1, probs, K6, **T)
    assert (mismatch.verdict, mismatch.reason) == ("mismatch", "P(1) = 0.100 < mismatch threshold 0.2")
    uncertain = judge(2, {"2": 0.4}, K6, **T)
    assert uncertain.reason == "P(2) = 0.400 is between the thresholds 0.2 and 0.6"
    assert uncertain.thresholds == {"match": 0.6, "mismatch": 0.2}


def test_a_count_in_the_overflow_class_is_named_with_its_class_and_a_missing_class_is_zero() -> None:
    over = judge(9, {"6+": 0.9}, K6, **T)
    assert over.verdict == "match" and over.expected_label == "6+"
    assert over.reason == "P(9 (class 6+)) = 0.900 >= match threshold 0.6"
    absent = judge(3, {"2": 1.0}, K6, **T)
    assert absent.probability_of_expected == 0.0 and absent.verdict == "mismatch"


def test_a_count_outside_the_models_classes_is_uncertain_and_says_its_range() -> None:
    verdict = judge(0, {"1": 1.0}, CountClasses.udacity(), **T)
    assert verdict.verdict == "uncertain" and verdict.probability_of_expected is None
    assert verdict.reason == "the model only knows counts 1..5; it cannot judge a recorded 0"


def test_labels_rebuild_their_classes() -> None:
    assert classes_from_labels(["0", "1", "2", "3+"]) == CountClasses(min_count=0, max_count=3, overflow=True)
    assert classes_from_labels(["1", "2", "3", "4", "5"]) == CountClasses.udacity()
    with pytest.raises(ValueError, match=r"^no labels$"):
        classes_from_labels([])


# -- the neighbour ratio (issue 22): P(recorded) over the likelier of its two neighbouring classes


def test_the_neighbour_ratio_reads_the_recorded_count_against_its_neighbours() -> None:
    probs = {"0": 0.05, "1": 0.1, "2": 0.4, "3": 0.2, "4": 0.25}
    v = judge(2, probs, K6, match_threshold=1.5, mismatch_threshold=0.5, score="neighbour_ratio")
    assert v.judged_by == "neighbour_ratio" and v.score == pytest.approx(0.4 / 0.2)
    assert v.verdict == "match" and v.probability_of_expected == pytest.approx(0.4)
    assert v.reason == (
        "the photo agrees with the record: P(2) = 0.400, 2.00x its likelier neighbour (match at 1.5x or more)"
    )
    # 3 against the likelier of 2 and 4: 0.2 / 0.4
    v = judge(3, probs, K6, match_threshold=1.5, mismatch_threshold=0.6, score="neighbour_ratio")
    assert v.score == pytest.approx(0.5) and v.verdict == "mismatch"
    assert v.reason == (
        "the photo contradicts the record: P(3) = 0.200, 0.50x its likelier neighbour (mismatch below 0.6x)"
    )
    v = judge(4, probs, K6, match_threshold=1.5, mismatch_threshold=0.5, score="neighbour_ratio")
    assert v.verdict == "uncertain" and v.score == pytest.approx(0.25 / 0.2)
    assert v.reason.startswith("unsure: P(4) = 0.250, 1.25x its likelier neighbour, between")


def test_the_ends_of_the_range_have_one_neighbour_and_the_ratio_is_bounded() -> None:
    # 0 has only 1 as a neighbour; the overflow class only its lower neighbour
    v = judge(0, {"0": 0.6, "1": 0.3}, K6, match_threshold=1, mismatch_threshold=0.5, score="neighbour_ratio")
    assert v.score == pytest.approx(2.0)
    ratio = {"match_threshold": 1, "mismatch_threshold": 0.5, "score": "neighbour_ratio"}
    v = judge(12, {"5": 0.1, "6+": 0.8}, K6, **ratio)  # type: ignore[arg-type]
    assert v.expected_label == "6+" and v.score == pytest.approx(8.0) and v.verdict == "match"
    sure = judge(3, {"3": 1.0}, K6, match_threshold=1, mismatch_threshold=0.5, score="neighbour_ratio")
    assert sure.score == MAX_RATIO and "more than 100x" in sure.reason
    assert record_score(0, [1.0], "neighbour_ratio") == MAX_RATIO  # a model with one class
    # no class for the count: no score either
    none = judge(0, {"1": 1.0}, UDACITY, match_threshold=1, mismatch_threshold=0.5, score="neighbour_ratio")
    assert none.score is None and none.judged_by == "neighbour_ratio" and none.verdict == "uncertain"
    with pytest.raises(ValueError, match="unknown verdict score 'argmax'"):
        judge(1, {"1": 1.0}, K6, match_threshold=1, mismatch_threshold=0.5, score="argmax")  # type: ignore[arg-type]


def test_the_probability_score_is_p_itself() -> None:
    v = judge(2, {"2": 0.3, "3": 0.6}, K6, **T)
    assert v.judged_by == "probability" and v.score == v.probability_of_expected == 0.3


def test_a_far_count_weighs_a_tenth_so_a_plain_five_contradicts_a_recorded_two() -> None:
    probs = {"1": 0.01, "2": 0.02, "3": 0.01, "5": 0.9, "0": 0.06}
    v = judge(2, probs, K6, match_threshold=1.26, mismatch_threshold=0.296, score="neighbour_ratio")
    assert v.score == pytest.approx(0.02 / 0.09) and v.verdict == "mismatch"
    assert v.reason == (
        "the photo contradicts the record: P(2) = 0.020, 0.22x a tenth of P(5) = 0.900 "
        "(mismatch below 0.296x)"
    )
    # A neighbour outweighs a far count unless the far one is ten times likelier.
    assert record_score(2, [0.0, 0.2, 0.4, 0.0, 1.9], "neighbour_ratio") == pytest.approx(2.0)
    assert record_score(2, [0.0, 0.2, 0.4, 0.0, 2.1], "neighbour_ratio") == pytest.approx(0.4 / 0.21)
