"""A check as the console shows it: the photo's address, probability bars, the verdict's reason, review."""

from __future__ import annotations

from dataclasses import dataclass, field

from model.operating_points import LEGACY_THRESHOLDS
from model.verdicts import classes_from_labels, judge
from records.orm import BinCheck
from records.orm_console import CheckReview


@dataclass(frozen=True)
class Bar:
    label: str
    probability: float
    recorded: bool  # the class the recorded count falls in
    predicted: bool  # the model's most probable class


@dataclass(frozen=True)
class CheckView:
    check: BinCheck
    review: CheckReview | None
    bars: list[Bar]
    reason: str
    # Every review of the check, newest first (only filled in on the check's own page).
    history: list[CheckReview] = field(default_factory=list)

    @property
    def photo_url(self) -> str:
        return f"/checks/{self.check.id}/photo"

    @property
    def alt(self) -> str:
        check = self.check
        return (
            f"Photo of bin {check.bin_id} (check {check.id}): recorded {check.expected_count}, "
            f"the model counts {check.predicted_label}"
        )


def _reason(check: BinCheck) -> str:
    # The reason is not stored with a check; the rule and the stored thresholds give it back exactly.
    try:
        classes = classes_from_labels(list(check.probabilities))
        verdict = judge(
            check.expected_count,
            check.probabilities,
            classes,
            match_threshold=check.thresholds.get("match", LEGACY_THRESHOLDS["match"]),
            mismatch_threshold=check.thresholds.get("mismatch", LEGACY_THRESHOLDS["mismatch"]),
            score="neighbour_ratio" if check.judged_by == "neighbour_ratio" else "probability",
        )
        return verdict.reason
    except ValueError as exc:
        return f"the stored probabilities cannot be read as count classes ({exc})"


def view(check: BinCheck, review: CheckReview | None, history: list[CheckReview] | None = None) -> CheckView:
    labels = list(check.probabilities)
    try:
        index = classes_from_labels(labels).class_of(check.expected_count)
        recorded = labels[index] if index is not None else None
    except ValueError:
        recorded = None
    bars = [
        Bar(label, float(p), label == recorded, label == check.predicted_label)
        for label, p in check.probabilities.items()
    ]
    return CheckView(check, review, bars, _reason(check), history or [])
