"""Which rule judges the checks of a model version under this deployment's settings (docs/verdicts.md).

The rule itself is decided in model/operating_points.py (``choose_rule``); this module only reads the
deployment's settings into it, so the check route, the models API and the console say the same thing.
"""

from __future__ import annotations

from typing import Any

from model.operating_points import Rule, choose_rule
from settings import Settings


def rule_for(settings: Settings, points: dict[str, Any] | None) -> Rule:
    """The rule checks of a version with ``points`` are judged by under ``settings``."""
    return choose_rule(
        points,
        settings.verdict_score,
        settings.verdict_operating_point,
        settings.match_threshold,
        settings.mismatch_threshold,
    )
