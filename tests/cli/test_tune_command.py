"""`binwatch tune` as a user runs it: the installed command on real bins, and bad spaces refused with the
field named before any training starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_ml_commands import run


@pytest.mark.slow
def test_tune_runs_a_small_study_and_reports_it(abid_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    res = run(
        "tune",
        str(abid_root),
        "--recipe",
        "smoke",
        "--limit",
        "80",
        "--epochs",
        "1",
        "--max-train-batches",
        "1",
        "--set",
        "num_workers=0",
        "--trials",
        "2",
        "--space",
        "lr=1e-3..1e-2:log",
        "--space",
        "image_size=48,64",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    # The space shown back, one line per trial, the summary table and where things went.
    assert "lr" in res.stdout and "0.001 .. 0.01 (log)" in res.stdout and "48, 64" in res.stdout
    assert "trial 0: complete value" in res.stdout and "trial 1: complete value" in res.stdout
    assert "best: trial" in res.stdout and f"best checkpoint: {out / 'best.pt'}" in res.stdout
    summary = json.loads((out / "study.json").read_text())
    assert [t["state"] for t in summary["trials"]] == ["COMPLETE", "COMPLETE"]
    assert all(
        1e-3 <= t["params"]["lr"] <= 1e-2 and t["params"]["image_size"] in (48, 64) for t in summary["trials"]
    )
    # The first trial is the recipe's own values (smoke: lr 2e-3 at 64 px), the yardstick for the rest.
    assert summary["trials"][0]["baseline"] and summary["trials"][0]["params"] == {
        "lr": 0.002,
        "image_size": 64,
    }
    assert not summary["trials"][1]["baseline"]
    assert "the recipe's own values (trial 0): accuracy" in res.stdout
    assert (out / "best.pt").is_file() and (out / "optimization_history.png").is_file()
    assert (out / "trial-000" / "best.pt").is_file() and (out / "trial-001" / "best.pt").is_file()


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("lr=1e-2..1e-4", "--space lr: low 0.01 is greater than high 0.0001"),
        ("optimizer=adamw", "--space optimizer: a categorical needs two values at least"),
        ("learning_rate=1e-4..1e-2", "--space learning_rate: is not a training setting"),
    ],
)
def test_bad_spaces_fail_before_training(abid_root: Path, tmp_path: Path, space: str, message: str) -> None:
    res = run("tune", str(abid_root), "--space", space, "--out", str(tmp_path / "never"))
    assert res.returncode == 2
    assert message in " ".join(res.stderr.split()), res.stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("command", ["train", "tune"])
def test_a_setting_given_twice_is_an_error_not_a_crash(abid_root: Path, command: str) -> None:
    extra = ["--space", "lr=1e-3..1e-2"] if command == "tune" else []
    res = run(command, str(abid_root), "--epochs", "2", "--set", "epochs=3", *extra)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "epochs given both as an option and with --set" in " ".join(res.stderr.split()), res.stderr
