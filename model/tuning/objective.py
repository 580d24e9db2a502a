"""What a study optimises: a validation figure and the direction it implies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Objective:
    name: str  # as the user names it: accuracy, rmse, accuracy_0-5
    metric: str  # the key in Evaluation.headline() / EpochResult.summary()
    direction: str  # "maximize" or "minimize", as Optuna spells it
    description: str

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "maximize" else a < b

    def value(self, figures: dict[str, Any]) -> float:
        """The objective's value in a dict of validation figures; ValueError if the figure is missing."""
        value = figures.get(self.metric)
        if value is None:
            raise ValueError(
                f"objective {self.name!r} needs the validation figure {self.metric!r}, which this run did "
                "not produce (accuracy_0-5 needs the overflow classes with k >= 6)"
            )
        return float(value)


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("accuracy", "accuracy", "maximize", "exact-count accuracy on the validation split"),
        Objective("rmse", "rmse", "minimize", "root mean squared count error on the validation split"),
        Objective(
            "accuracy_0-5",
            "accuracy_0-5",
            "maximize",
            "exact-count accuracy on validation bins holding 0-5 objects (the figure the ABID challenge "
            "reports)",
        ),
    )
}
DEFAULT_OBJECTIVE = "accuracy"


def objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}") from None
