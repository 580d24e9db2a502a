"""A study's pictures: Optuna's optimisation history and parameter importances, as PNG files.

Importances use Optuna's PED-ANOVA evaluator, which needs no scikit-learn (the default fANOVA evaluator
does). They need two complete trials at least; with fewer, the picture is skipped and the reason returned.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import optuna

HISTORY = "optimization_history.png"
IMPORTANCES = "param_importances.png"


def draw(study: optuna.Study, out_dir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Write the pictures into ``out_dir``; returns (name -> path written, name -> why it was skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return written, {HISTORY: "no trial completed", IMPORTANCES: "no trial completed"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = ovm.plot_optimization_history(study)
        ax.figure.set_size_inches(8, 5)
        ax.figure.tight_layout()
        ax.figure.savefig(out_dir / HISTORY, dpi=100)
        plt.close(ax.figure)
        written[HISTORY] = out_dir / HISTORY
        if len(complete) < 2:
            skipped[IMPORTANCES] = "needs two complete trials"
        else:
            try:
                ax = ovm.plot_param_importances(
                    study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
                )
            except (ValueError, RuntimeError) as exc:  # e.g. every complete trial has the same parameters
                skipped[IMPORTANCES] = str(exc)
            else:
                ax.figure.set_size_inches(8, 5)
                ax.figure.tight_layout()
                ax.figure.savefig(out_dir / IMPORTANCES, dpi=100)
                plt.close(ax.figure)
                written[IMPORTANCES] = out_dir / IMPORTANCES
    return written, skipped
