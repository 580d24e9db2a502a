"""A version's operating points (model/operating_points.py): measured thresholds, their rates, the rule."""

from __future__ import annotations

import numpy as np
import pytest

from model.classes import CountClasses
from model.operating_points import LEGACY_THRESHOLDS, choose_rule, compute, risk_words
from model.verdict_quality import record_scores

K12 = CountClasses(min_count=0, max_count=12, overflow=True)


def leaning(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities that lean towards each bin's true count, as a middling counter's do."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 8, size=n)
    probs = rng.dirichlet(np.ones(K12.num_classes) * 0.5, size=n)
    for row, c in zip(probs, counts, strict=True):
        row[c] += 0.5
        row /= row.sum()
    return probs, counts


def test_each_point_holds_its_false_alarm_target_and_the_match_point_its_false_matches() -> None:
    probs, counts = leaning(600, 0)
    points = compute(probs, counts, K12, "a made-up split")
    assert points["measured_on"] == "a made-up split" and points["max_false_match"] == 0.10
    assert set(points["scores"]) == {"neighbour_ratio", "probability"}
    for score, measured in points["scores"].items():
        correct, off = record_scores(probs, counts, K12, score)
        assert points["correct_records"] == len(correct) and points["off_by_one_records"] == len(off)
        assert 0.5 < measured["auroc"] <= 1
        match = measured["match"]
        assert (off >= match).mean() <= 0.10 + 1e-9
        for target, rate in (("2%", 0.02), ("5%", 0.05)):
            point = measured["mismatch"][target]
            assert point["threshold"] <= match
            # the rates stored are the rates the thresholds give on the same records
            assert point["false_alarm"] == pytest.approx((correct < point["threshold"]).mean())
            assert point["false_alarm"] <= rate
            assert point["caught"] == pytest.approx((off < point["threshold"]).mean())
            assert point["false_match"] == pytest.approx((off >= match).mean())
        assert measured["mismatch"]["2%"]["threshold"] <= measured["mismatch"]["5%"]["threshold"]
        assert measured["mismatch"]["2%"]["caught"] <= measured["mismatch"]["5%"]["caught"]


def test_the_rule_prefers_the_settings_then_the_versions_points_then_the_legacy_pair() -> None:
    probs, counts = leaning(400, 1)
    points = compute(probs, counts, K12, "val")
    ratio = points["scores"]["neighbour_ratio"]

    rule = choose_rule(points, "neighbour_ratio", "5%")
    assert (rule.source, rule.score) == ("model", "neighbour_ratio")
    assert rule.thresholds == {"match": ratio["match"], "mismatch": ratio["mismatch"]["5%"]["threshold"]}
    assert rule.risk == risk_words(points, "neighbour_ratio", "5%")
    assert choose_rule(points, "neighbour_ratio", "2%").mismatch == ratio["mismatch"]["2%"]["threshold"]
    assert choose_rule(points, "probability").match == points["scores"]["probability"]["match"]

    overridden = choose_rule(points, "neighbour_ratio", "5%", match_override=3.0)
    assert overridden.source == "settings" and overridden.match == 3.0
    assert overridden.mismatch == ratio["mismatch"]["5%"]["threshold"]
    assert "not measured" in overridden.risk and "BINWATCH_MATCH_THRESHOLD" in overridden.risk

    legacy = choose_rule(None, "neighbour_ratio")
    assert (legacy.source, legacy.score) == ("legacy", "probability")
    assert legacy.thresholds == LEGACY_THRESHOLDS
    assert "no measured operating points" in legacy.risk
    both = choose_rule({}, "neighbour_ratio", match_override=2.0, mismatch_override=0.5)
    assert (both.source, both.score, both.thresholds) == ("settings", "neighbour_ratio", both.thresholds)
    assert both.thresholds == {"match": 2.0, "mismatch": 0.5}
    with pytest.raises(ValueError, match="unknown operating point '1%'; choose one of 2%, 5%"):
        choose_rule(points, "neighbour_ratio", "1%")


def test_the_risk_is_said_in_plain_words() -> None:
    points = {
        "measured_on": "its validation split, 1722 bins",
        "correct_records": 1182,
        "off_by_one_records": 2343,
        "scores": {
            "neighbour_ratio": {
                "mismatch": {"5%": {"false_alarm": 0.0499, "caught": 0.179, "false_match": 0.1003}},
            }
        },
    }
    assert risk_words(points, "neighbour_ratio", "5%") == (
        "at this setting about 1 correct record in 20 is called a mismatch; this model catches about 18% of "
        "off-by-one records and lets 10% of them through as match (measured on 1182 correct and 2343 "
        "off-by-one records of its validation split, 1722 bins)"
    )
    points["scores"]["neighbour_ratio"]["mismatch"]["5%"]["false_alarm"] = 0.0
    assert "no correct record of those measured was called a mismatch" in risk_words(
        points, "neighbour_ratio", "5%"
    )
