"""A training job's hyperparameters resolve through the same recipes as `binwatch train`."""

from __future__ import annotations

import pytest

from model.recipes import DEFAULT_RECIPE, RECIPES
from records.job_spec import Hyperparameters, resolve_config


def test_a_job_without_a_recipe_trains_the_default_recipe() -> None:
    config = resolve_config(Hyperparameters())
    assert config["recipe"] == DEFAULT_RECIPE
    for key, value in RECIPES[DEFAULT_RECIPE].items():
        assert config[key] == value
    assert config["device"] == "auto"


def test_job_overrides_win_over_the_recipe() -> None:
    config = resolve_config(Hyperparameters(recipe="smoke", epochs=5, image_size=96))
    assert (config["recipe"], config["epochs"], config["image_size"]) == ("smoke", 5, 96)


def test_an_invalid_combination_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown recipe 'fast'"):
        resolve_config(Hyperparameters(recipe="fast"))
