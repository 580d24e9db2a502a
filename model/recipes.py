"""Named training recipes: tested settings for a given budget. ``binwatch train --recipe NAME``.

A recipe is only defaults; any option given on the command line (or in a training job) overrides it.
"""

from __future__ import annotations

from typing import Any

from model.config import TrainConfig

RECIPES: dict[str, dict[str, Any]] = {
    # Smoke test: seconds on a laptop CPU. Proves the path works, not the accuracy.
    "smoke": {
        "architecture": "resnet18",
        "image_size": 64,
        "epochs": 2,
        "batch_size": 16,
        "lr": 2e-3,
        "calibrate": False,
        "color_jitter": 0.0,
    },
    # A quick CPU run for the demo and the README figures: ResNet18 at 112px on the train split.
    "cpu-quick": {
        "architecture": "resnet18",
        "image_size": 112,
        "epochs": 6,
        "batch_size": 64,
        "lr": 3e-3,
        "weight_decay": 0.05,
        "schedule": "onecycle",
        "label_smoothing": 0.1,
    },
    # Full ABID on a GPU host: ResNet34 at 224px, the ABID challenge's setting with a longer schedule.
    "gpu-full": {
        "architecture": "resnet34",
        "image_size": 224,
        "epochs": 40,
        "batch_size": 256,
        "lr": 4e-3,
        "weight_decay": 0.05,
        "schedule": "onecycle",
        "label_smoothing": 0.1,
        "ema_decay": 0.999,
        "num_workers": 8,
        "cache_images": False,
        "amp": True,
    },
}

DEFAULT_RECIPE = "cpu-quick"


def recipe_config(name: str | None = None, **overrides: Any) -> TrainConfig:
    """The recipe's settings with ``overrides`` (None values ignored) on top."""
    name = name or DEFAULT_RECIPE
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(sorted(RECIPES))}")
    values = dict(RECIPES[name])
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["recipe"] = name
    return TrainConfig(**values)
