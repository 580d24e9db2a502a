"""The promotion policy: after a job succeeds, should its model become the active one?

``if_better`` compares like with like: the active model is evaluated *now*, on this job's validation split,
and the two are compared on the same metric. Comparing against the accuracy stored with the active model
would mix splits and datasets (it may have been trained on a different subset), which says nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from model.metrics import Evaluation


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str | None = None
    new_value: float | None = None
    active_value: float | None = None


def comparable_metric(new: Evaluation, old: Evaluation) -> tuple[str, float, float] | None:
    """The metric both models can be judged on, with the two values; None if there is none.

    Same classes: accuracy over those classes. Different classes (another K, or 1..5 against 0..5+):
    accuracy on a standard count range both can name (0-5, else 1-5).
    """
    if new.labels == old.labels:
        return "accuracy", new.accuracy, old.accuracy
    for name in ("0-5", "1-5"):
        a, b = new.subsets.get(name), old.subsets.get(name)
        if a is not None and b is not None and a.n and b.n:
            return f"accuracy on counts {name}", a.accuracy, b.accuracy
    return None


def decide(
    policy: str,
    new: Evaluation,
    split: str,
    active_id: int | None,
    evaluate_active: Callable[[], Evaluation],
) -> Decision:
    """Apply ``policy``; ``evaluate_active`` evaluates the active model on the same ``split`` (described in
    words, for the reason text) and is only called for ``if_better`` with an active model."""
    if policy == "never":
        return Decision(False, "policy 'never': registered without promoting")
    if policy == "always":
        replaced = f", replacing version {active_id}" if active_id is not None else ""
        return Decision(True, f"policy 'always': promoted without comparison{replaced}")
    if policy != "if_better":
        raise ValueError(f"unknown promotion policy {policy!r}")
    if active_id is None:
        return Decision(True, "policy 'if_better': promoted, no model was active")
    try:
        old = evaluate_active()
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot compare", which must not promote
        return Decision(
            False,
            f"policy 'if_better': not promoted, the active version {active_id} could not be evaluated on "
            f"{split} ({type(exc).__name__}: {exc})",
        )
    metric = comparable_metric(new, old)
    if metric is None:
        return Decision(
            False,
            f"policy 'if_better': not promoted, the active version {active_id} has classes {old.labels} and "
            f"this model {new.labels}, with no count range in common to compare on",
        )
    name, mine, theirs = metric
    where = f"{name} on {split}"
    if not (math.isfinite(mine) and math.isfinite(theirs)):
        return Decision(False, f"policy 'if_better': not promoted, {where} is undefined", name, mine, theirs)
    if mine > theirs:
        return Decision(
            True,
            f"policy 'if_better': promoted, {where} is {mine:.4f} against {theirs:.4f} for the active "
            f"version {active_id}",
            name,
            mine,
            theirs,
        )
    return Decision(
        False,
        f"policy 'if_better': not promoted, {where} is {mine:.4f}, not above {theirs:.4f} for the active "
        f"version {active_id}",
        name,
        mine,
        theirs,
    )
