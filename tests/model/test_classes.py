"""model/classes.py: the count classes, their labels and the class of a count (written after a
mutation-testing pass, docs/testing.md)."""

from __future__ import annotations

import pytest

from model.classes import CountClasses


def test_the_named_class_sets() -> None:
    assert CountClasses().labels == ["0", "1", "2", "3", "4", "5", "6+"]
    assert CountClasses.overflow_at(4) == CountClasses(min_count=0, max_count=4, overflow=True)
    assert CountClasses.overflow_at(4).labels == ["0", "1", "2", "3", "4+"]
    udacity = CountClasses.udacity()
    assert udacity.labels == ["1", "2", "3", "4", "5"]
    assert udacity.overflow is False and udacity.num_classes == 5


@pytest.mark.parametrize(
    ("classes", "count", "index"),
    [
        (CountClasses(), 0, 0),
        (CountClasses(), 5, 5),
        (CountClasses(), 6, 6),
        (CountClasses(), 88, 6),
        (CountClasses.udacity(), 0, None),
        (CountClasses.udacity(), 1, 0),
        (CountClasses.udacity(), 5, 4),
        (CountClasses.udacity(), 6, None),
    ],
)
def test_class_of_a_count(classes: CountClasses, count: int, index: int | None) -> None:
    assert classes.class_of(count) == index


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_count": -1}, "min_count must be >= 0"),
        ({"min_count": 3, "max_count": 3}, r"max_count \(3\) must be above min_count \(3\)"),
    ],
)
def test_impossible_class_sets_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CountClasses(**kwargs)


def test_count_of_each_class_and_its_bounds() -> None:
    udacity = CountClasses.udacity()
    assert [udacity.count_of(i) for i in range(5)] == [1, 2, 3, 4, 5]
    assert CountClasses().count_of(6) == 6  # the overflow class stands for its smallest count
    for index in (-1, 5):
        with pytest.raises(ValueError, match=rf"^class index {index} out of range 0..4$"):
            udacity.count_of(index)


@pytest.mark.parametrize("classes", [CountClasses(), CountClasses.udacity(), CountClasses(2, 9, True)])
def test_classes_survive_their_stored_form(classes: CountClasses) -> None:
    stored = classes.to_dict()
    assert stored == {
        "min_count": classes.min_count,
        "max_count": classes.max_count,
        "overflow": classes.overflow,
    }
    assert CountClasses.from_dict(stored) == classes
    assert CountClasses.from_dict({"min_count": "2", "max_count": "9", "overflow": 1}) == CountClasses(
        2, 9, True
    )
