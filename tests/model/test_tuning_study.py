"""A study on this host (model/tuning): trials are real training runs on real bins, the pruner stops a
scripted bad region after its first epoch, the best trial's checkpoint is served, and a study continues
where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from model.abid import LocalSource, load_records
from model.predictor import Predictor
from model.recipes import recipe_config
from model.subsets import stratified_sample
from model.tuning.local import run_local_study
from model.tuning.objective import objective
from model.tuning.space import SearchSpace
from model.tuning.study import open_study

pytestmark = pytest.mark.slow

# The scripted bad region: k=30 asks the exact count among 31 classes of a model that has seen 64 bins, while
# k=2 asks 0, 1 or "2+" (most bins), so after one epoch its accuracy is far below the sane trials' median.
GOOD = [{"k": 2, "lr": 3e-3}, {"k": 2, "lr": 1e-3}]
BAD = {"k": 30, "lr": 3e-3}


def test_a_study_prunes_the_bad_region_and_keeps_the_best_trial(abid_root: Path, tmp_path: Path) -> None:
    source = LocalSource(abid_root)
    records = load_records(source)
    train = stratified_sample([r for r in records if r.split == "train"], 64, seed=1)
    val = stratified_sample([r for r in records if r.split == "val"], 42, seed=1)
    base = recipe_config(
        "smoke", image_size=64, epochs=2, max_train_batches=4, num_workers=0, calibrate=False
    )
    space = SearchSpace.parse(["k=2,30", "lr=1e-3..1e-2:log"])
    goal = objective("accuracy")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(storage, "test", goal)
    # Enqueued points come first, whatever the sampler would pick: two sane trials, then the bad one.
    for params in (*GOOD, BAD):
        study.enqueue_trial(params)
    ended: list[str] = []

    result = run_local_study(
        base,
        space,
        goal,
        source,
        train,
        val,
        tmp_path,
        trials=3,
        storage=storage,
        name="test",
        progress=False,
        on_trial_end=lambda t: ended.append(t.state),
    )
    assert ended == ["COMPLETE", "COMPLETE", "PRUNED"]
    pruned = result.trials[2]
    assert pruned.params == BAD and pruned.epochs_done == 1 and pruned.epochs_planned == 2
    assert pruned.seconds_saved and pruned.seconds_saved > 0
    complete = result.trials[:2]
    assert all(len(t.values) == 2 and t.value is not None for t in complete)
    assert result.best is not None and result.best.value == max(t.value for t in complete)
    # The study's model is the best trial's own checkpoint, and it serves.
    assert result.best_checkpoint == tmp_path / "best.pt"
    assert (tmp_path / "best.pt").read_bytes() == (
        tmp_path / f"trial-{result.best.number:03d}" / "best.pt"
    ).read_bytes()
    photo = next((abid_root / "bin-images").glob("*.jpg"))
    assert Predictor(result.best_checkpoint, device="cpu").predict([photo])[0].label
    for picture in ("optimization_history.png", "param_importances.png"):
        assert (tmp_path / picture).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "study.json").read_text())
    assert [t["state"] for t in summary["trials"]] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert summary["best"]["number"] == result.best.number and summary["direction"] == "maximize"

    # Running it again with a larger budget continues the same study: the three trials stay.
    again = run_local_study(
        base,
        space,
        goal,
        source,
        train,
        val,
        tmp_path,
        trials=4,
        storage=storage,
        name="test",
        progress=False,
    )
    assert [t.state for t in again.trials[:3]] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert len(again.trials) == 4 and again.trials[3].state in ("COMPLETE", "PRUNED")


def test_a_trial_left_running_by_a_dead_process_is_failed_on_restart(abid_root: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    goal = objective("accuracy")
    orphan = open_study(storage, "test", goal).ask()  # asked, never told: its process "died"
    source = LocalSource(abid_root)
    records = load_records(source)
    train = stratified_sample([r for r in records if r.split == "train"], 32, seed=2)
    val = stratified_sample([r for r in records if r.split == "val"], 16, seed=2)
    base = recipe_config(
        "smoke", image_size=64, epochs=1, max_train_batches=1, num_workers=0, calibrate=False
    )
    result = run_local_study(
        base,
        SearchSpace.parse(["lr=1e-3..1e-2:log"]),
        goal,
        source,
        train,
        val,
        tmp_path,
        trials=2,
        storage=storage,
        name="test",
        progress=False,
    )
    states = {t.number: t.state for t in result.trials}
    assert states[orphan.number] == "FAIL"
    # The budget counts the failed orphan: one more trial ran, and it completed.
    assert sorted(states.values()) == ["COMPLETE", "FAIL"]
    assert optuna.load_study(study_name="test", storage=storage).best_trial.number != orphan.number
