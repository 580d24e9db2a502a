"""scripts/reproduce_accuracy.sh, the one command behind docs/accuracy.md, run as a user runs it (cut down
to a few hundred real bins and a few batches so it takes seconds, not the full training budget)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from model.recipes import DEFAULT_RECIPE

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_reproduce_script_trains_the_default_recipe_and_evaluates(abid_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "repro"
    env = dict(
        os.environ,
        BINWATCH_ABID=str(abid_root),
        OMP_NUM_THREADS="2",
        COLUMNS="200",
        TRAIN_ARGS="--limit 300 --epochs 1 --image-size 64 --max-train-batches 3",
        EVAL_ARGS="--limit 80",
    )
    res = subprocess.run(
        ["bash", "scripts/reproduce_accuracy.sh", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    meta = json.loads((out / "best.json").read_text())
    assert meta["train_config"]["recipe"] == DEFAULT_RECIPE
    assert (out / "training_curves.png").stat().st_size > 1000
    for name in ("eval-val", "eval-val-tta"):
        assert (out / name / "confusion_matrix.png").stat().st_size > 1000
        assert json.loads((out / name / "metrics.json").read_text())["n"] == 80
    rows = [line for line in res.stdout.splitlines() if line.startswith("| ") and "%" in line]
    assert len(rows) == 3, res.stdout
