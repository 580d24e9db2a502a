"""torchvision ResNet backbones with a counting head."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models

ARCHITECTURES = ("resnet18", "resnet34", "resnet50")


class PretrainedWeightsError(FileNotFoundError):
    """Pretrained weights were asked for but the local file is missing or does not fit."""


def build_resnet(arch: str, num_classes: int, pretrained: str | Path | None = None) -> nn.Module:
    """A ResNet with a fresh ``num_classes`` head.

    ``pretrained`` is a local state_dict file (e.g. torchvision's resnet18-f37072fd.pth copied from a
    machine that has it). binwatch never downloads weights: a missing file is an error that says so.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    net: nn.Module = getattr(models, arch)(weights=None)
    if pretrained is not None:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(
                f"pretrained weights file {path} does not exist; binwatch never downloads weights — copy the "
                f"torchvision {arch} .pth file there, or train without --pretrained"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise PretrainedWeightsError(
                f"{path} does not hold {arch} weights "
                f"(missing {len(missing)} keys, {len(unexpected)} unexpected)"
            )
    in_features = net.fc.in_features  # type: ignore[union-attr]
    net.fc = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(in_features, num_classes))  # type: ignore[assignment]
    return net
