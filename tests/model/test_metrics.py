"""Metrics against values computed by hand."""

import math

import numpy as np
import pytest

from model.classes import CountClasses
from model.metrics import evaluate_predictions, expected_calibration_error


def one_hot(indices: list[int], k: int, p: float = 1.0) -> np.ndarray:
    out = np.full((len(indices), k), (1 - p) / (k - 1))
    out[np.arange(len(indices)), indices] = p
    return out


def test_accuracy_rmse_within_one_confusion_by_hand() -> None:
    classes = CountClasses()  # 0..5, 6+
    true = [0, 1, 2, 3, 5, 9]
    pred = [0, 2, 2, 1, 5, 6]  # class indices; 6 is "6+"
    ev = evaluate_predictions(one_hot(pred, 7), true, classes)
    assert ev.n == 6
    assert ev.accuracy == pytest.approx(4 / 6)  # 0, 2, 5 and 9->6+ are right
    # count errors: 0, 1, 0, 2, 0, 0 (9 is clipped to 6 like its class) -> rmse sqrt(5/6)
    assert ev.rmse == pytest.approx(math.sqrt(5 / 6))
    assert ev.within_one == pytest.approx(5 / 6)
    assert ev.confusion[1][2] == 1 and ev.confusion[3][1] == 1 and ev.confusion[6][6] == 1
    assert sum(map(sum, ev.confusion)) == 6
    assert ev.per_class_accuracy == {"0": 1.0, "1": 0.0, "2": 1.0, "3": 0.0, "5": 1.0, "6+": 1.0}
    # 0-5 subset leaves out the 9-item bin: 3 of 5 right, errors 0,1,0,2,0
    sub = ev.subsets["0-5"]
    assert sub.n == 5 and sub.accuracy == pytest.approx(3 / 5) and sub.rmse == pytest.approx(math.sqrt(5 / 5))
    # 1-5 subset: bins 1,2,3,5 -> 2 of 4 right
    assert ev.subsets["1-5"].n == 4 and ev.subsets["1-5"].accuracy == pytest.approx(0.5)
    # restricted to 0..5 the one-hot argmax is unchanged for these bins: same figures
    assert sub.accuracy_restricted == pytest.approx(3 / 5)


def test_restricted_subset_scores_argmax_within_the_subset() -> None:
    classes = CountClasses()
    # a 5-item bin called "6+" (p=0.5) with "5" as runner-up (p=0.3)
    probs = np.array([[0.0, 0.0, 0.0, 0.1, 0.1, 0.3, 0.5]])
    sub = evaluate_predictions(probs, [5], classes).subsets["0-5"]
    assert sub.accuracy == 0.0 and sub.rmse == pytest.approx(1.0)
    assert sub.accuracy_restricted == 1.0 and sub.rmse_restricted == pytest.approx(0.0)


def test_udacity_classes_drop_zero_and_large_bins() -> None:
    classes = CountClasses.udacity()
    assert classes.labels == ["1", "2", "3", "4", "5"]
    ev = evaluate_predictions(one_hot([0, 1, 4], 5), [1, 3, 5], classes)
    assert ev.n == 3 and ev.accuracy == pytest.approx(2 / 3)
    assert "0-5" not in ev.subsets and ev.subsets["1-5"].n == 3
    # counts the classes cannot represent are left out entirely
    ev2 = evaluate_predictions(one_hot([0, 1], 5), [0, 7], classes)
    assert ev2.n == 0


def test_overflow_predictions_count_as_lower_bound_in_rmse() -> None:
    ev = evaluate_predictions(one_hot([6], 7), [4], CountClasses())
    assert ev.rmse == pytest.approx(2.0)


def test_ece_by_hand() -> None:
    # two predictions at 0.9 confidence, one right one wrong: |0.5 - 0.9| = 0.4 in that bin
    probs = np.array([[0.9, 0.1], [0.9, 0.1]])
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.4)
    # perfectly confident and right -> 0
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0])) == pytest.approx(0.0)


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="N x 7"):
        evaluate_predictions(np.zeros((2, 3)), [1, 2], CountClasses())


def test_count_classes_mapping() -> None:
    c = CountClasses.overflow_at(4)
    assert c.labels == ["0", "1", "2", "3", "4+"]
    assert [c.class_of(n) for n in (0, 3, 4, 88)] == [0, 3, 4, 4]
    assert c.count_of(4) == 4 and c.is_overflow(4) and not c.is_overflow(3)
    drop = CountClasses(0, 6, overflow=False)
    assert drop.class_of(6) is None and drop.num_classes == 6
    assert CountClasses.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError):
        CountClasses(3, 3)


def test_counting_losses() -> None:
    import torch

    from model.losses import CountingLoss

    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 4.0]])
    targets = torch.tensor([0, 1])
    plain = CountingLoss(4)(logits, targets)
    assert plain == pytest.approx(float(torch.nn.functional.cross_entropy(logits, targets)))
    ordinal = CountingLoss(4, ordinal_sigma=0.5)
    q = ordinal.soft_targets(torch.tensor([1]))[0]
    # mass is symmetric around the true class and decays with distance
    assert float(q[1]) > float(q[0]) > float(q[3])
    assert float(q[0]) == pytest.approx(float(q[2])) and float(q.sum()) == pytest.approx(1.0)
    # predicting a neighbour costs less than predicting far away
    near = ordinal(torch.tensor([[0.0, 0.0, 5.0, 0.0]]), torch.tensor([1]))
    far = ordinal(torch.tensor([[0.0, 0.0, 0.0, 5.0]]), torch.tensor([0]))
    assert near < far
    # the expected-count term is the squared error of sum(p * class) by hand
    sure = torch.tensor([[0.0, 0.0, 50.0, 0.0]])
    ec = CountingLoss(4, expected_count_weight=1.0)(sure, torch.tensor([0]))
    assert float(ec) == pytest.approx(50.0 + 4.0, rel=1e-3)
