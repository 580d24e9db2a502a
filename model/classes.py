"""Counting classes: how bin counts map to the classifier's output classes and back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OutOfRange = Literal["overflow", "drop"]


@dataclass(frozen=True)
class CountClasses:
    """Classes ``min_count .. max_count-1`` plus, optionally, an overflow class "max_count or more".

    The default (0..5 and "6+") is the ABID challenge range with the >5 bins kept in an overflow class
    instead of thrown away. The Udacity setting is ``CountClasses.udacity()``: 1..5, no overflow.
    """

    min_count: int = 0
    max_count: int = 6
    overflow: bool = True

    def __post_init__(self) -> None:
        if self.min_count < 0:
            raise ValueError(f"min_count must be >= 0, got {self.min_count}")
        if self.max_count <= self.min_count:
            raise ValueError(f"max_count ({self.max_count}) must be above min_count ({self.min_count})")

    @classmethod
    def overflow_at(cls, k: int) -> CountClasses:
        return cls(min_count=0, max_count=k, overflow=True)

    @classmethod
    def udacity(cls) -> CountClasses:
        # Udacity's capstone uses the bins holding 1..5 objects, one class each.
        return cls(min_count=1, max_count=6, overflow=False)

    @property
    def num_classes(self) -> int:
        return self.max_count - self.min_count + (1 if self.overflow else 0)

    @property
    def labels(self) -> list[str]:
        names = [str(c) for c in range(self.min_count, self.max_count)]
        if self.overflow:
            names.append(f"{self.max_count}+")
        return names

    def class_of(self, count: int) -> int | None:
        """The class index for a true count, or None when the count is outside the classes' range."""
        if count < self.min_count:
            return None
        if count < self.max_count:
            return count - self.min_count
        return self.num_classes - 1 if self.overflow else None

    def count_of(self, index: int) -> int:
        """The smallest count a class stands for (the overflow class stands for max_count)."""
        if not 0 <= index < self.num_classes:
            raise ValueError(f"class index {index} out of range 0..{self.num_classes - 1}")
        return self.min_count + index

    def is_overflow(self, index: int) -> bool:
        return self.overflow and index == self.num_classes - 1

    def to_dict(self) -> dict[str, object]:
        return {"min_count": self.min_count, "max_count": self.max_count, "overflow": self.overflow}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> CountClasses:
        return cls(
            min_count=int(data["min_count"]),  # type: ignore[arg-type]
            max_count=int(data["max_count"]),  # type: ignore[arg-type]
            overflow=bool(data["overflow"]),
        )
