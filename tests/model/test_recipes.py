"""Named recipes: each one is a valid training configuration; the default is the one docs/accuracy.md
measured best, and it is what `binwatch train` uses when no recipe is named."""

from __future__ import annotations

import pytest

from model.recipes import DEFAULT_RECIPE, RECIPES, recipe_config


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_a_valid_config(name: str) -> None:
    cfg = recipe_config(name)
    assert cfg.recipe == name
    for key, value in RECIPES[name].items():
        assert getattr(cfg, key) == value


def test_no_recipe_means_the_default_and_overrides_win() -> None:
    assert DEFAULT_RECIPE == "cpu-lite0"
    cfg = recipe_config(None, epochs=3, image_size=None)
    assert cfg.recipe == DEFAULT_RECIPE
    assert cfg.epochs == 3
    assert cfg.image_size == RECIPES[DEFAULT_RECIPE]["image_size"]


def test_unknown_recipe_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown recipe 'fast'; choose one of .*cpu-best"):
        recipe_config("fast")
