"""Verdict-quality figures (model/verdict_quality.py) on hand-made probabilities with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from model.classes import CountClasses
from model.verdict_quality import auroc, record_scores, verdict_quality

K12 = CountClasses(min_count=0, max_count=12, overflow=True)  # 0..11, "12+"


def one_hot(counts: list[int], p: float, classes: CountClasses = K12) -> np.ndarray:
    """Rows putting ``p`` on each count's class and spreading the rest evenly."""
    n = classes.num_classes
    rows = np.full((len(counts), n), (1 - p) / (n - 1))
    for i, c in enumerate(counts):
        rows[i, classes.class_of(c)] = p
    return rows


def test_auroc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    pos = rng.choice([0.1, 0.2, 0.5, 0.9], size=40)
    neg = rng.choice([0.05, 0.2, 0.5, 0.7], size=55)
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(pos, neg)]
    assert auroc(pos, neg) == pytest.approx(sum(pairs) / len(pairs))
    assert auroc(np.array([0.9]), np.array([0.1])) == 1.0
    assert auroc(np.array([0.1]), np.array([0.9])) == 0.0
    assert np.isnan(auroc(np.array([]), np.array([0.1])))


def test_a_confident_right_model_matches_true_records_and_flags_off_by_one() -> None:
    counts = [0, 1, 2, 3, 4, 5] * 5 + [7, 9, 30]
    ratio = verdict_quality(
        one_hot(counts, 0.9), np.array(counts), K12, match_threshold=2, mismatch_threshold=1
    )
    assert ratio.score == "neighbour_ratio" and ratio.auroc == 1.0
    assert ratio.correct["match"] == 1.0 and ratio.off_by_one["mismatch"] == 1.0
    q = verdict_quality(one_hot(counts, 0.9), np.array(counts), K12, score="probability")
    assert q.bins == 30 and q.correct_records == 30
    assert q.off_by_one_records == 30 * 2 - 5  # no "-1" record for the empty bins
    assert q.correct == {"match": 1.0, "uncertain": 0.0, "mismatch": 0.0}
    assert q.off_by_one == {"match": 0.0, "uncertain": 0.0, "mismatch": 1.0}
    assert q.auroc == 1.0
    assert q.above_five == 3 and q.above_five_called_six_or_more == 1.0


def test_a_model_off_by_one_everywhere_is_caught() -> None:
    counts = [1, 2, 3, 4] * 10 + [8, 8]
    wrong = [c + 1 for c in counts[:40]] + [2, 3]  # says c+1 for the small bins, "2"/"3" for the full ones
    q = verdict_quality(one_hot(wrong, 0.9), np.array(counts), K12, score="probability")
    assert q.correct["mismatch"] == 1.0  # every correct record looks wrong: false alarms
    assert q.off_by_one["match"] == pytest.approx(0.5)  # the c+1 records match, the c-1 ones do not
    assert q.auroc < 0.5
    assert q.above_five_called_six_or_more == 0.0


def test_thresholds_follow_the_settings_and_recommendations_hold_their_rates() -> None:
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 6, size=400)
    probs = rng.dirichlet(np.ones(K12.num_classes) * 0.5, size=400)
    # Lean each row towards its true count so correct records score higher on the whole.
    for row, c in zip(probs, counts, strict=True):
        row[c] += 0.6
        row /= row.sum()
    for score in ("probability", "neighbour_ratio"):
        q = verdict_quality(probs, counts, K12, match_threshold=0.7, mismatch_threshold=0.02, score=score)
        assert q.thresholds == {"match": 0.7, "mismatch": 0.02} and q.score == score
        rec = q.recommended
        assert rec["false_alarm"] <= 0.05 and rec["false_match"] <= 0.10
        assert 0 <= rec["mismatch_threshold"] <= rec["match_threshold"]
        assert 0.5 < q.auroc <= 1.0
        # Each risk-coverage row holds its false-alarm rate, and agrees with the verdict shares at the same
        # thresholds.
        assert [r["max_false_alarm"] for r in q.risk_coverage] == [0.01, 0.02, 0.05, 0.10, 0.20]
        caught = [r["caught"] for r in q.risk_coverage]
        assert caught == sorted(caught), "a looser false-alarm rate never catches fewer"
        for row in q.risk_coverage:
            assert row["false_alarm"] <= row["max_false_alarm"]
            same = verdict_quality(
                probs,
                counts,
                K12,
                match_threshold=rec["match_threshold"],
                mismatch_threshold=row["mismatch_threshold"],
                score=score,
            )
            assert row["false_alarm"] == pytest.approx(same.correct["mismatch"])
            assert row["caught"] == pytest.approx(same.off_by_one["mismatch"])
            assert row["false_match"] == pytest.approx(same.off_by_one["match"])
            assert row["decided_correct"] == pytest.approx(1 - same.correct["uncertain"])
            assert row["decided_off_by_one"] == pytest.approx(1 - same.off_by_one["uncertain"])


def test_the_neighbour_ratio_separates_a_spread_right_answer_from_a_neighbour() -> None:
    """A flat-but-right photo (P(3) = 0.3 with 0.2 on each neighbour) scores above a photo that prefers the
    neighbour (P(3) = 0.3 against P(4) = 0.5): P(recorded) alone cannot tell them apart."""
    right = np.full(K12.num_classes, 0.0)
    right[[2, 3, 4]] = [0.2, 0.3, 0.2]
    right[5:] = 0.3 / (K12.num_classes - 5)
    neighbour = np.full(K12.num_classes, 0.0)
    neighbour[[3, 4]] = [0.3, 0.5]
    neighbour[5:] = 0.2 / (K12.num_classes - 5)
    probs, counts = np.stack([right, neighbour]), np.array([3, 4])  # the second photo holds 4, recorded 3
    for score, separates in (("probability", False), ("neighbour_ratio", True)):
        pc, po = record_scores(probs, counts, K12, score)
        correct_3, off_3 = pc[0], po[2]  # bin 0 recorded 3 (correct); bin 1 recorded 3 (off by one)
        assert bool(correct_3 > off_3) == separates, score
