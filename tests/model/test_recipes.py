"""Named recipes: each one is a valid training configuration; the default is the one docs/accuracy.md
measured best, and it is what `binwatch train` uses when no recipe is named."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from model.abid import LocalSource, load_records
from model.predictor import Predictor
from model.recipes import DEFAULT_RECIPE, RECIPES, recipe_config
from model.subsets import stratified_sample
from model.training import train


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_trains_and_its_checkpoint_predicts(name: str, abid_root: Path, tmp_path: Path) -> None:
    # Everything the recipe sets (architecture, pretrained weights, classes, loss, EMA, schedule, ...) goes
    # through a real, shortened run: only the size of the run is cut (image size, batches, epochs, data).
    cfg = recipe_config(
        name, image_size=64, epochs=2, batch_size=8, max_train_batches=2, num_workers=0, cache_images=False
    )
    assert cfg.recipe == name and cfg.architecture == RECIPES[name]["architecture"]
    source = LocalSource(abid_root)
    records = load_records(source)
    train_recs = stratified_sample([r for r in records if r.split == "train"], 24, seed=4)
    val_recs = stratified_sample([r for r in records if r.split == "val"], 16, seed=4)
    result = train(cfg, source, train_recs, val_recs, tmp_path, progress=False)
    assert len(result.history) == 2 and all(math.isfinite(h["train_loss"]) for h in result.history)
    predictor = Predictor(result.best_path, device="cpu")
    assert predictor.labels == cfg.count_classes().labels
    assert predictor.metadata["train_config"]["recipe"] == name
    prediction = predictor.predict([abid_root / "bin-images" / f"{val_recs[0].id}.jpg"])[0]
    assert prediction.label in predictor.labels


def test_recipes_are_distinct_and_named_for_their_host() -> None:
    settings = [tuple(sorted(RECIPES[n].items(), key=str)) for n in RECIPES]
    assert len(set(map(str, settings))) == len(RECIPES), "two recipes are the same configuration"
    # The GPU recipe asks for mixed precision and enough loader workers; CPU recipes do not need either.
    assert recipe_config("gpu-full").amp and recipe_config("gpu-full").num_workers >= 4
    assert all(not RECIPES[n].get("num_workers") for n in RECIPES if n.startswith("cpu"))


def test_no_recipe_means_the_default_and_overrides_win() -> None:
    assert DEFAULT_RECIPE == "cpu-lite0"
    cfg = recipe_config(None, epochs=3, image_size=None)
    assert cfg.recipe == DEFAULT_RECIPE
    assert cfg.epochs == 3
    assert cfg.image_size == RECIPES[DEFAULT_RECIPE]["image_size"]


def test_unknown_recipe_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown recipe 'fast'; choose one of .*cpu-best"):
        recipe_config("fast")
