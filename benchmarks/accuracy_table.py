"""Print the experiment log row of each training run: the figures docs/accuracy.md tabulates.

Reads each run's best.json (written by `binwatch train`: validation metrics after calibration, wall time).
Run: .venv/bin/python benchmarks/accuracy_table.py runs/exp/*/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(run: Path) -> str:
    meta = json.loads((run / "best.json").read_text())
    m = meta["metrics"]
    s05, s15 = m["subsets"].get("0-5", {}), m["subsets"].get("1-5", {})
    cfg = meta["train_config"]
    return (
        f"| {run.name} | {cfg['architecture']} {cfg['image_size']}px, {meta['epochs']} ep | "
        f"{s05.get('accuracy', float('nan')):.1%} | {s05.get('rmse', float('nan')):.3f} | "
        f"{s15.get('accuracy', float('nan')):.1%} | {m['accuracy']:.1%} | {m['ece']:.3f} | "
        f"{meta.get('wall_time_s', 0) / 60:.0f} min |"
    )


def main() -> None:
    print("| run | model | 0-5 acc | 0-5 RMSE | 1-5 acc | all-class acc | ECE | train time |")
    print("|---|---|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        run = Path(arg)
        if (run / "best.json").is_file():
            print(row(run))


if __name__ == "__main__":
    main()
