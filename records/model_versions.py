"""The model registry: checkpoints in the artifact store, their versions in the database, promotions.

Checkpoints are stored content-addressed (``models/<sha256>/model.pt`` with ``model.json`` and any plots
beside it): registering the same file twice finds the existing version, and an upload whose database
insert failed leaves nothing that a retry would not reuse.

No torch here: callers that can (the CLI, the worker) verify a checkpoint loads before registering it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from records import registry
from records.artifacts import ArtifactStore
from records.orm import MODEL_SOURCES, ModelVersion
from records.paging import Page


class ModelVersionNotFound(LookupError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def finite_json(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None.

    Training metrics contain NaN for empty subsets; Postgres rejects NaN inside JSON and JSON responses
    cannot carry it, so it must not reach either.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def read_checkpoint_metadata(path: Path) -> dict[str, Any]:
    """The metadata in a checkpoint's json sidecar (``NAME.json`` beside ``NAME.pt``), without torch."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        raise FileNotFoundError(f"{side} not found: binwatch checkpoints come with a json sidecar")
    try:
        data = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{side} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{side} does not hold checkpoint metadata")
    return data


def find_by_sha256(session: Session, sha256: str) -> ModelVersion | None:
    return session.scalars(sa.select(ModelVersion).where(ModelVersion.sha256 == sha256).limit(1)).first()


def register_checkpoint(
    session: Session,
    store: ArtifactStore,
    path: Path,
    metadata: Mapping[str, Any],
    *,
    name: str,
    source: str = "cli",
    training_job_id: str | None = None,
    plots: Mapping[str, Path] | None = None,
    expected_sha256: str | None = None,
) -> tuple[ModelVersion, bool]:
    """Upload a checkpoint and add its version row (flushed, not committed).

    Returns ``(version, created)``; ``created`` is False when a version with the same file (sha256)
    already exists, in which case nothing is uploaded.
    """
    if source not in MODEL_SOURCES:
        raise ValueError(f"source must be one of {MODEL_SOURCES}, got {source!r}")
    for field in ("architecture", "labels", "preprocessing"):
        if field not in metadata:
            raise ValueError(f"checkpoint metadata has no {field!r}; is {path} a binwatch checkpoint?")
    sha256 = sha256_of(path)
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise ValueError(f"{path} has sha256 {sha256[:12]}…, expected {expected_sha256[:12]}…")
    existing = find_by_sha256(session, sha256)
    if existing is not None:
        return existing, False

    base = f"models/{sha256}"
    store.put_file(f"{base}/model.pt", path)
    sidecar = finite_json(dict(metadata, sha256=sha256, file="model.pt"))
    store.put_bytes(f"{base}/model.json", json.dumps(sidecar, indent=2).encode(), "application/json")
    plot_keys: dict[str, str] = {}
    for plot_name, plot_path in (plots or {}).items():
        if Path(plot_path).is_file():
            key = f"{base}/{Path(plot_path).name}"
            store.put_file(key, Path(plot_path))
            plot_keys[plot_name] = key

    version = registry.register_version(
        session,
        name=name[:128],
        artifact_key=f"{base}/model.pt",
        sha256=sha256,
        architecture=str(metadata["architecture"]),
        classes=[str(label) for label in metadata["labels"]],
        preprocessing=finite_json(dict(metadata["preprocessing"])),
        metrics=finite_json(dict(metadata.get("metrics") or {})),
        plots=plot_keys,
        source=source,
        training_job_id=training_job_id,
        operating_points=finite_json(metadata.get("operating_points")),
    )
    return version, True


def get_version(session: Session, version_id: int) -> ModelVersion:
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise ModelVersionNotFound(f"no model version with id {version_id}")
    return version


def list_versions(session: Session, *, before: int | None = None, limit: int = 50) -> Page[ModelVersion]:
    """Versions, newest first; pass ``next_cursor`` as ``before`` for the next page."""
    query = sa.select(ModelVersion).order_by(ModelVersion.id.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(ModelVersion.id < before)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=str(rows[-1].id) if more and rows else None)


def promote(session: Session, version_id: int, *, actor: str, reason: str) -> tuple[ModelVersion, bool]:
    """Make ``version_id`` the active version (flushed, not committed); ``records.registry`` does the flip.

    Returns ``(version, changed)``: promoting the active version again adds no history row.
    """
    version = get_version(session, version_id)
    if version.is_active:
        return version, False
    registry.promote(session, version, actor=actor[:128], reason=reason)
    return version, True
