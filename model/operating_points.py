"""A model version's operating points: the verdict thresholds measured on its own validation predictions.

Invariants:

- Points are computed once, from the validation split's calibrated probabilities, when training finishes
  (model/training.py ``finalise``); they travel in the checkpoint's metadata (``operating_points``) and are
  stored with the version when it is registered (records/model_versions.py), by a job or by the CLI. A
  promotion therefore brings its own meaning of ``mismatch`` with it; nothing is re-derived at check time.
- For every score of model/verdicts.py there is one ``match`` point (at most ``MAX_FALSE_MATCH`` of
  off-by-one records called ``match``) and one ``mismatch`` point per false-alarm target of
  ``FALSE_ALARM_TARGETS`` (at most that share of correct records called ``mismatch``), never above the
  match point. Each point carries the rates it was measured at, so the risk can be said in words.
- ``choose_rule`` is the one place that decides which thresholds judge a check: the deployment's explicit
  thresholds win, then the version's points, then (a version without points, trained before issue 22)
  the legacy rule, P(recorded count) at 0.35 / 0.05, said to be unmeasured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from model.classes import CountClasses
from model.verdict_quality import (
    MAX_FALSE_MATCH,
    auroc,
    match_point,
    mismatch_point,
    rates,
    record_scores,
)
from model.verdicts import SCORES, ScoreName

FALSE_ALARM_TARGETS = ("2%", "5%")
DEFAULT_TARGET = "5%"
LEGACY_THRESHOLDS = {"match": 0.35, "mismatch": 0.05}
Target = Literal["2%", "5%"]


def _target_rate(target: str) -> float:
    return float(target.rstrip("%")) / 100


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def compute(probs: np.ndarray, counts: np.ndarray, classes: CountClasses, measured_on: str) -> dict[str, Any]:
    """The operating points of every score, measured on ``probs`` (N x classes) and the true ``counts``."""
    out: dict[str, Any] = {"measured_on": measured_on, "max_false_match": MAX_FALSE_MATCH, "scores": {}}
    for score in SCORES:
        correct, off = record_scores(probs, counts, classes, score)
        if not len(correct) or not len(off):
            continue
        mismatch = {t: mismatch_point(correct, _target_rate(t)) for t in FALSE_ALARM_TARGETS}
        match = max(match_point(off, MAX_FALSE_MATCH), *mismatch.values())
        out["correct_records"] = len(correct)
        out["off_by_one_records"] = len(off)
        out["scores"][score] = {
            "auroc": _finite(auroc(correct, off)),
            "match": match,
            "mismatch": {
                t: {"threshold": point, **rates(correct, off, point, match)} for t, point in mismatch.items()
            },
        }
    return out


@dataclass(frozen=True)
class Rule:
    """What judges a check: the score, its two thresholds, where they came from and their risk in words."""

    score: ScoreName
    match: float
    mismatch: float
    source: Literal["model", "settings", "legacy"]
    risk: str

    @property
    def thresholds(self) -> dict[str, float]:
        return {"match": self.match, "mismatch": self.mismatch}


def _one_in(rate: float) -> str:
    if rate <= 0:
        return "no correct record of those measured was called a mismatch"
    return f"about 1 correct record in {max(1, round(1 / rate))} is called a mismatch"


def risk_words(points: dict[str, Any], score: str, target: str) -> str:
    """The measured risk of a version's point in plain words, for the check response and the console."""
    measured = points["scores"][score]["mismatch"][target]
    n, off = points.get("correct_records"), points.get("off_by_one_records")
    on = f" (measured on {n} correct and {off} off-by-one records of " if n else " ("
    return (
        f"at this setting {_one_in(measured['false_alarm'])}; this model catches about "
        f"{measured['caught']:.0%} of off-by-one records and lets {measured['false_match']:.0%} of them "
        f"through as match{on}{points.get('measured_on', 'its validation split')})"
    )


def choose_rule(
    points: dict[str, Any] | None,
    score: ScoreName,
    target: str = DEFAULT_TARGET,
    match_override: float | None = None,
    mismatch_override: float | None = None,
) -> Rule:
    """The rule a check of a version with ``points`` is judged by (see the module docstring)."""
    if target not in FALSE_ALARM_TARGETS:
        known = ", ".join(FALSE_ALARM_TARGETS)
        raise ValueError(f"unknown operating point {target!r}; choose one of {known}")
    measured = (points or {}).get("scores", {}).get(score)
    if measured is None:
        if match_override is not None and mismatch_override is not None:
            return Rule(score, match_override, mismatch_override, "settings", _unmeasured(score))
        legacy = LEGACY_THRESHOLDS
        return Rule(
            "probability",
            legacy["match"] if match_override is None else match_override,
            legacy["mismatch"] if mismatch_override is None else mismatch_override,
            "legacy",
            "this model version has no measured operating points (it was trained before binwatch stored "
            "them): judged by P(recorded count), whose false-alarm rate for this model is not known",
        )
    match = measured["match"] if match_override is None else match_override
    mismatch = measured["mismatch"][target]["threshold"] if mismatch_override is None else mismatch_override
    if match_override is None and mismatch_override is None:
        return Rule(score, match, mismatch, "model", risk_words(points or {}, score, target))
    return Rule(score, match, mismatch, "settings", _unmeasured(score))


def _unmeasured(score: str) -> str:
    return (
        f"thresholds set by this deployment (BINWATCH_MATCH_THRESHOLD / BINWATCH_MISMATCH_THRESHOLD, on the "
        f"{score.replace('_', ' ')}); their risk for this model was not measured: binwatch evaluate shows it"
    )
