"""The promotion policy: never, always, and if_better on the same metric and split."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from model.classes import CountClasses
from model.metrics import Evaluation, evaluate_predictions
from worker.promotion import comparable_metric, decide

SPLIT = "this job's validation split (6 bins)"


def evaluation(predicted: list[int], truth: list[int], classes: CountClasses) -> Evaluation:
    probs = np.full((len(predicted), classes.num_classes), 0.01)
    for row, count in enumerate(predicted):
        probs[row, classes.class_of(count)] = 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    return evaluate_predictions(probs, truth, classes)


K6 = CountClasses(min_count=0, max_count=6, overflow=True)
TRUTH = [0, 1, 2, 3, 4, 5]
GOOD = evaluation([0, 1, 2, 3, 4, 4], TRUTH, K6)  # 5/6
BAD = evaluation([0, 1, 1, 1, 1, 1], TRUTH, K6)  # 2/6


def must_not_run() -> Evaluation:
    raise AssertionError("the active model must not be evaluated for this policy")


def test_never_and_always() -> None:
    never = decide("never", GOOD, SPLIT, 3, must_not_run)
    assert not never.promote and "never" in never.reason
    always = decide("always", BAD, SPLIT, 3, must_not_run)
    assert always.promote and "replacing version 3" in always.reason


def test_if_better_without_an_active_model_promotes() -> None:
    decision = decide("if_better", BAD, SPLIT, None, must_not_run)
    assert decision.promote and "no model was active" in decision.reason


@pytest.mark.parametrize(
    ("new", "old", "promote"), [(GOOD, BAD, True), (BAD, GOOD, False), (GOOD, GOOD, False)]
)
def test_if_better_compares_on_the_same_split(new: Evaluation, old: Evaluation, promote: bool) -> None:
    decision = decide("if_better", new, SPLIT, 7, lambda: old)
    assert decision.promote is promote
    assert decision.metric == "accuracy"
    assert decision.new_value == pytest.approx(new.accuracy) and decision.active_value == pytest.approx(
        old.accuracy
    )
    # The reason names the metric, the split, both values and the version it was compared with.
    assert f"accuracy on {SPLIT}" in decision.reason and "version 7" in decision.reason
    assert f"{new.accuracy:.4f}" in decision.reason and f"{old.accuracy:.4f}" in decision.reason
    assert ("not promoted" in decision.reason) is (not promote)


def test_different_classes_compare_on_a_common_count_range() -> None:
    k4 = CountClasses(min_count=0, max_count=4, overflow=True)  # 0 1 2 3 4+: no 0-5 subset
    udacity = CountClasses.udacity()  # 1..5
    truth = [1, 2, 3, 4, 5, 1]
    mine = evaluation([1, 2, 3, 4, 5, 1], truth, udacity)
    theirs = evaluation([1, 2, 2, 2, 2, 2], truth, K6)
    name, a, b = comparable_metric(mine, theirs)  # type: ignore[misc]
    assert name == "accuracy on counts 1-5" and a == 1.0 and b < a
    assert decide("if_better", mine, SPLIT, 2, lambda: theirs).promote
    # No range both can name: refuse rather than compare apples with oranges.
    k4_eval = evaluation([1, 2, 3, 4, 4, 1], truth, k4)
    decision = decide("if_better", k4_eval, SPLIT, 2, lambda: theirs)
    assert decision.promote is False and "no count range in common" in decision.reason


def test_an_active_model_that_cannot_be_evaluated_is_not_replaced_blindly() -> None:
    def broken() -> Evaluation:
        raise FileNotFoundError("models/abc/model.pt")

    decision = decide("if_better", GOOD, SPLIT, 4, broken)
    assert not decision.promote
    assert "could not be evaluated" in decision.reason and "models/abc/model.pt" in decision.reason


# -- the exact decisions and reasons (written after a mutation-testing pass, docs/testing.md)


def test_each_policy_states_its_decision_in_full() -> None:
    never = decide("never", GOOD, SPLIT, 3, must_not_run)
    assert never.promote is False and never.reason == "policy 'never': registered without promoting"
    replacing = decide("always", BAD, SPLIT, 3, must_not_run)
    assert replacing.promote is True
    assert replacing.reason == "policy 'always': promoted without comparison, replacing version 3"
    first = decide("always", BAD, SPLIT, None, must_not_run)
    assert first.reason == "policy 'always': promoted without comparison"
    empty = decide("if_better", BAD, SPLIT, None, must_not_run)
    assert empty.promote is True and empty.reason == "policy 'if_better': promoted, no model was active"
    with pytest.raises(ValueError, match=r"^unknown promotion policy 'sometimes'$"):
        decide("sometimes", GOOD, SPLIT, 3, must_not_run)


def test_a_failed_evaluation_names_the_error_and_never_promotes() -> None:
    def broken() -> Evaluation:
        raise FileNotFoundError("models/abc/model.pt")

    decision = decide("if_better", GOOD, SPLIT, 4, broken)
    assert decision.promote is False and decision.metric is None
    assert decision.reason == (
        f"policy 'if_better': not promoted, the active version 4 could not be evaluated on {SPLIT} "
        "(FileNotFoundError: models/abc/model.pt)"
    )


@pytest.mark.parametrize("which", ["mine", "theirs", "both"])
def test_an_undefined_figure_on_either_side_never_promotes(which: str) -> None:
    nan = float("nan")
    new = replace(GOOD, accuracy=nan) if which in ("mine", "both") else GOOD
    old = replace(BAD, accuracy=nan) if which in ("theirs", "both") else BAD
    decision = decide("if_better", new, SPLIT, 5, lambda: old)
    assert decision.promote is False
    assert decision.reason == f"policy 'if_better': not promoted, accuracy on {SPLIT} is undefined"
    assert decision.metric == "accuracy"
    assert decision.new_value is new.accuracy and decision.active_value is old.accuracy


def test_the_comparison_prefers_counts_0_to_5_when_both_models_name_them() -> None:
    k7 = CountClasses(min_count=0, max_count=7, overflow=True)
    truth = [0, 1, 2, 3, 4, 5]
    mine = evaluation(truth, truth, k7)
    theirs = evaluation([0, 1, 1, 1, 1, 1], truth, K6)
    assert comparable_metric(mine, theirs) == ("accuracy on counts 0-5", 1.0, pytest.approx(2 / 6))
