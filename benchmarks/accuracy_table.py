"""Print the experiment log row of each run: the figures docs/accuracy.md tabulates.

A run folder is either a training run (its best.json, written by `binwatch train`: validation metrics after
calibration, wall time) or an evaluation (its metrics.json, written by `binwatch evaluate --out`).
Run: .venv/bin/python benchmarks/accuracy_table.py runs/exp/*/ runs/exp/*/eval-*/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADER = (
    "| run | 0-5 acc | 0-5 RMSE | 0-5 within (RMSE) | 1-5 acc | 1-5 within | all-class acc | ECE "
    "| verdict AUROC | match (true) | mismatch (±1) | >5 called 6+ | train time |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _pct(value: float | None) -> str:
    return "—" if value is None or value != value else f"{value:.1%}"


def verdict_cells(verdicts: dict | None) -> str:
    """Verdict quality (only evaluations carry it: `binwatch evaluate` computes it, training does not)."""
    if not verdicts:
        return "— | — | — | — | "
    return (
        f"{verdicts['auroc']:.3f} | {_pct(verdicts['correct']['match'])} | "
        f"{_pct(verdicts['off_by_one']['mismatch'])} | {_pct(verdicts['above_five_called_six_or_more'])} | "
    )


def row(name: str, metrics: dict, wall_time_s: float | None) -> str:
    s05, s15 = metrics["subsets"].get("0-5", {}), metrics["subsets"].get("1-5", {})
    within = s05.get("accuracy_restricted")
    within_rmse = s05.get("rmse_restricted", float("nan"))
    return (
        f"| {name} | {_pct(s05.get('accuracy'))} | {s05.get('rmse', float('nan')):.3f} | "
        f"{_pct(within)} ({within_rmse:.3f}) | {_pct(s15.get('accuracy'))} | "
        f"{_pct(s15.get('accuracy_restricted'))} | {_pct(metrics['accuracy'])} | {metrics['ece']:.3f} | "
        + verdict_cells(metrics.get("verdicts"))
        + (f"{wall_time_s / 60:.0f} min |" if wall_time_s else "— |")
    )


def read_run(folder: Path) -> str | None:
    if (folder / "best.json").is_file():
        meta = json.loads((folder / "best.json").read_text())
        return row(folder.name, meta["metrics"], meta.get("wall_time_s"))
    if (folder / "metrics.json").is_file():
        name = f"{folder.parent.name}/{folder.name}"
        return row(name, json.loads((folder / "metrics.json").read_text()), None)
    return None


def main(argv: list[str]) -> int:
    print(HEADER)
    missing = []
    for arg in argv:
        line = read_run(Path(arg))
        if line:
            print(line)
        else:
            missing.append(arg)
    for arg in missing:
        print(f"{arg}: no best.json or metrics.json", file=sys.stderr)
    return 1 if missing or not argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
