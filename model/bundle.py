"""The default counter that ships inside binwatch: a trained checkpoint stored as fp16 weights.

``model/bundled/counter.pt`` holds ``{"format", "metadata", "state_dict"}`` with every floating tensor in
fp16 (half the bytes of a normal checkpoint; the model card, docs/model-card.md, shows the counts do not
change). Its sha256 is pinned here, so a file swapped or damaged in a checkout or an image is refused, not
served. ``materialise`` turns it back into an ordinary fp32 binwatch checkpoint (with json sidecar and the
training plots beside it) that the registry, the Predictor and the API load like any other.

``export`` is how the file was made from a training run's ``best.pt`` (``binwatch models bundle``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import CheckpointError, load_payload, save_checkpoint, sha256_file

BUNDLE_DIR = Path(__file__).with_name("bundled")
BUNDLED_CHECKPOINT = BUNDLE_DIR / "counter.pt"
BUNDLED_SHA256 = "5219ff752b393bc3620409c1f66d253f8487e414b5e444021a21a093107a8bb4"
BUNDLE_FORMAT = "binwatch-bundled/1"
BUNDLED_NAME = "bundled-default"
PLOTS = ("confusion_matrix.png", "training_curves.png")


class BundledModelError(CheckpointError):
    """The bundled model is missing or is not the file this version of binwatch pinned."""


def _as_dtype(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def export(checkpoint: str | Path, dest: str | Path = BUNDLED_CHECKPOINT) -> str:
    """Write ``checkpoint`` (a verified binwatch checkpoint) as a compact fp16 bundle; returns its sha256.

    The plots written beside the checkpoint by training are copied beside the bundle.
    """
    checkpoint, dest = Path(checkpoint), Path(dest)
    payload = load_payload(checkpoint)
    metadata = dict(payload["metadata"])
    # A materialised bundle given back (to add its operating points, say) keeps naming the training run.
    metadata.pop("bundled", None)
    metadata.setdefault("bundled_from", {"file": checkpoint.name, "sha256": sha256_file(checkpoint)})
    dest.parent.mkdir(parents=True, exist_ok=True)
    state = _as_dtype(payload["state_dict"], torch.half)
    torch.save({"format": BUNDLE_FORMAT, "metadata": metadata, "state_dict": state}, dest)
    for plot in PLOTS:
        if (checkpoint.parent / plot).is_file():
            shutil.copyfile(checkpoint.parent / plot, dest.parent / plot)
    return sha256_file(dest)


def bundled_metadata(path: Path = BUNDLED_CHECKPOINT, expected_sha256: str | None = None) -> dict[str, Any]:
    return _load(path, expected_sha256)["metadata"]


def _load(path: Path, expected_sha256: str | None) -> dict[str, Any]:
    expected = BUNDLED_SHA256 if expected_sha256 is None else expected_sha256
    if not path.is_file():
        raise BundledModelError(
            f"the bundled model {path} is missing; reinstall binwatch (the file ships with the package)"
        )
    digest = sha256_file(path)
    if digest != expected:
        raise BundledModelError(
            f"the bundled model {path} has sha256 {digest[:12]}… but this binwatch pins {expected[:12]}…; "
            "the file was modified or replaced — reinstall binwatch"
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != BUNDLE_FORMAT:
        raise BundledModelError(f"{path} is not a binwatch bundled model (expected format {BUNDLE_FORMAT})")
    return payload


def materialise(
    dest_dir: str | Path, path: Path = BUNDLED_CHECKPOINT, expected_sha256: str | None = None
) -> Path:
    """Write the bundled model as ``dest_dir/best.pt`` (fp32, json sidecar, plots); returns that path."""
    payload = _load(Path(path), expected_sha256)
    dest_dir = Path(dest_dir)
    target = dest_dir / "best.pt"
    metadata = dict(payload["metadata"], bundled=True)
    save_checkpoint(target, _as_dtype(payload["state_dict"], torch.float32), metadata)
    for plot in PLOTS:
        if (Path(path).parent / plot).is_file():
            shutil.copyfile(Path(path).parent / plot, dest_dir / plot)
    return target
