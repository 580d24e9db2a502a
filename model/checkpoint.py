"""Checkpoint files: weights plus the metadata serving needs, guarded by a sha256.

A checkpoint is two files side by side:

- ``NAME.pt`` — ``torch.save`` of ``{"format", "metadata", "state_dict"}`` (plain tensors and JSON-able
  values only, so it loads with ``weights_only=True`` and never runs pickled code);
- ``NAME.json`` — the same metadata, readable without torch, plus ``sha256`` of ``NAME.pt``.

Loading recomputes the hash and rejects a file whose hash differs from the sidecar (or from the hash the
caller expects, e.g. the model registry's), then checks the weights fit the declared architecture.
Training-state files (``last.pt``, used to resume) add the optimizer, scheduler and history.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.classes import CountClasses
from model.network import build_network
from model.preprocess import Preprocessing

FORMAT = "binwatch-checkpoint/1"


class CheckpointError(ValueError):
    """The checkpoint is missing, corrupt, tampered with or not a binwatch checkpoint."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> str:
    """Write ``path`` and its json sidecar atomically; returns the sha256 of ``path``."""
    path = Path(path)
    json.dumps(metadata)  # fail early, before writing anything, if the metadata is not JSON-able
    payload: dict[str, Any] = {
        "format": FORMAT,
        "metadata": metadata,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }
    if extra:
        payload.update(extra)
    _atomic_write(path, lambda fh: torch.save(payload, fh))
    digest = sha256_file(path)
    sidecar = dict(metadata, sha256=digest, file=path.name)
    _atomic_write(sidecar_path(path), lambda fh: fh.write(json.dumps(sidecar, indent=2).encode()))
    return digest


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{side} is not valid JSON: {exc}") from exc


def load_payload(path: str | Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """Verify and load a checkpoint file; raises CheckpointError with the reason on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    digest = sha256_file(path)
    sidecar = read_sidecar(path)
    if expected_sha256 is None and sidecar is not None:
        expected_sha256 = sidecar.get("sha256")
    mismatch = expected_sha256 is not None and digest != expected_sha256
    if mismatch and (sidecar is None or sidecar.get("sha256") != expected_sha256):
        # The registry's hash (or the caller's): nothing local can explain a difference.
        raise CheckpointError(_modified(path, digest, str(expected_sha256)))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        if mismatch:
            raise CheckpointError(_modified(path, digest, str(expected_sha256))) from exc
        raise CheckpointError(f"checkpoint {path} cannot be read safely: {exc}") from exc
    if mismatch:
        assert sidecar is not None
        recorded = {k: v for k, v in sidecar.items() if k not in ("sha256", "file")}
        written = payload.get("metadata") if isinstance(payload, dict) else None
        if isinstance(written, dict) and json.loads(json.dumps(written)) != recorded:
            # Both files are written atomically, checkpoint first: a whole checkpoint whose own metadata
            # is not the sidecar's is a newer checkpoint whose sidecar was never written.
            raise CheckpointError(
                f"checkpoint {path} is newer than its sidecar {sidecar_path(path).name}: the process that "
                "wrote them stopped between the two files. The checkpoint is whole (it is written in one "
                f"step) but no longer verified: delete {sidecar_path(path)} to use it as it is, or train "
                "into a fresh output folder"
            )
        raise CheckpointError(_modified(path, digest, str(expected_sha256)))
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a binwatch checkpoint (expected format {FORMAT})")
    return payload


def _modified(path: Path, digest: str, expected: str) -> str:
    return (
        f"checkpoint {path} has sha256 {digest[:12]}… but {expected[:12]}… was recorded: "
        "the file was modified or corrupted after it was written; refusing to load it"
    )


@dataclass
class LoadedModel:
    net: torch.nn.Module
    metadata: dict[str, Any]
    classes: CountClasses
    preprocessing: Preprocessing
    sha256: str


def build_from_metadata(metadata: dict[str, Any]) -> torch.nn.Module:
    classes = CountClasses.from_dict(metadata["classes"])
    image_size = int(metadata.get("preprocessing", {}).get("image_size", 224))
    return build_network(metadata["architecture"], classes.num_classes, image_size=image_size)


def load_model(path: str | Path, expected_sha256: str | None = None) -> LoadedModel:
    """A ready-to-run network (eval mode, CPU) from a checkpoint file."""
    payload = load_payload(path, expected_sha256)
    metadata = payload["metadata"]
    try:
        net = build_from_metadata(metadata)
        net.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} weights do not match its metadata: {exc}") from exc
    net.eval()
    return LoadedModel(
        net=net,
        metadata=metadata,
        classes=CountClasses.from_dict(metadata["classes"]),
        preprocessing=Preprocessing.from_dict(metadata["preprocessing"]),
        sha256=sha256_file(path),
    )
