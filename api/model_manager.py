"""Which model this API process serves, and swapping it when another version is promoted.

Every process polls the database every ``model_poll_seconds`` for the active ModelVersion (so several
uvicorn workers and several hosts converge without talking to each other). A new version is downloaded
from the artifact store into ``<home>/model-cache/<sha256>.pt``, verified against the registry's sha256
while loading, warmed up with one forward pass, and only then swapped in by replacing one reference.

Requests take a reference to the ``ServingModel`` once and use it for preprocessing and inference, so a
swap never mixes one model's preprocessing with another's weights; in-flight batches finish on the model
they started with, which stays alive until the last request holding it is done.

The promote endpoint loads the new version *before* committing the promotion (a checkpoint that cannot
load is refused with nothing changed) and installs it right after the commit, so the promoting process
serves the new version by the time it answers; the others follow at their next poll.

The forward pass runs on ``settings.inference_backend``: ONNX Runtime on the CPU by default ("auto"), eager
PyTorch on a GPU. A checkpoint the ONNX backend cannot provide (export refused, runtime missing) is served by
eager PyTorch with a warning rather than not at all: the eager path is the reference both are tested against.
ONNX files are cached beside the checkpoints in the model cache (model/onnx_backend.py names them).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker

from api.metrics import Metrics
from model.checkpoint import CheckpointError
from model.classes import CountClasses
from model.onnx_backend import ONNX_FP32, TORCH_BACKEND, BackendUnavailableError
from model.predictor import Predictor
from model.training import resolve_device
from records import registry
from records.artifacts import ArtifactNotFound, ArtifactStore
from records.db import session_scope
from records.orm import ModelVersion
from settings import Settings

log = logging.getLogger("binwatch.api.models")

_EPOCH = datetime.min.replace(tzinfo=UTC)


class ModelLoadError(RuntimeError):
    """A model version's checkpoint is missing, corrupt or does not match the registry."""


@dataclass(frozen=True)
class VersionRef:
    """What the manager needs to know about a ModelVersion row, detached from any session."""

    id: int
    name: str
    sha256: str
    artifact_key: str
    promoted_at: datetime | None
    # The version's verdict thresholds (model/operating_points.py); None when it has none. Not compared:
    # a version's points are written once, when it is registered.
    operating_points: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @classmethod
    def of(cls, row: ModelVersion) -> VersionRef:
        return cls(row.id, row.name, row.sha256, row.artifact_key, row.promoted_at, row.operating_points)


@dataclass(frozen=True, eq=False)
class ServingModel:
    """A loaded model version; immutable, shared by every request that picked it up."""

    version: VersionRef
    predictor: Predictor

    @property
    def version_id(self) -> int:
        return self.version.id

    @property
    def classes(self) -> CountClasses:
        return self.predictor.classes


@dataclass(frozen=True)
class ManagerStatus:
    model: ServingModel | None
    active_in_db: VersionRef | None
    loading: VersionRef | None
    error: str | None
    checked: bool  # the database has been asked at least once


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        artifacts: ArtifactStore,
        metrics: Metrics,
        threads: int | None = None,
    ) -> None:
        self.settings = settings
        # ONNX Runtime's intra-op threads (the thread budget's torch share); None: torch's count.
        self.threads = threads
        self.session_factory = session_factory
        self.artifacts = artifacts
        self.metrics = metrics
        self.cache_dir = settings.model_cache_dir
        self._current: ServingModel | None = None
        self._active_in_db: VersionRef | None = None
        self._loading: VersionRef | None = None
        self._error: str | None = None
        self._checked = False
        self._swap_lock = threading.Lock()
        # One load at a time: two threads loading the same version would only waste memory and time.
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading -----------------------------------------------------------------------------------

    @property
    def current(self) -> ServingModel | None:
        return self._current

    def status(self) -> ManagerStatus:
        return ManagerStatus(self._current, self._active_in_db, self._loading, self._error, self._checked)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll_loop, name="binwatch-model-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a failed poll (database down) must not end polling
                log.exception("checking the database for the active model failed; retrying")
            self._stop.wait(self.settings.model_poll_seconds)

    # -- loading -----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Ask the database for the active version; load and install it if it is not the one served."""
        with session_scope(self.session_factory) as session:
            row = registry.active_version(session)
            wanted = VersionRef.of(row) if row is not None else None
        self._active_in_db = wanted
        self._checked = True
        if wanted is None:
            if self._current is not None:
                log.warning("no model version is active any more; answering 503 until one is promoted")
                self._set(None)
            self._error = None
            return
        current = self._current
        if (
            current is not None
            and current.version.id == wanted.id
            and current.version.sha256 == wanted.sha256
        ):
            return
        if current is not None and _stamp(wanted) < _stamp(current.version):
            return  # a read from before a promotion this process already installed
        try:
            model = self.load(wanted)
        except ModelLoadError as exc:
            message = f"model version {wanted.id} ({wanted.name}) is active but cannot be loaded: {exc}"
            if message != self._error:
                log.error("%s", message)
            self._error = message
            return
        self.install(model)

    def load(self, version: VersionRef) -> ServingModel:
        """Download (if not cached), verify and warm up ``version``; raises ModelLoadError."""
        with self._load_lock:
            current = self._current
            if current is not None and current.version.sha256 == version.sha256:
                # Same weights under another version row: reuse the loaded network.
                return ServingModel(version, current.predictor)
            self._loading = version
            try:
                predictor = self._load_predictor(version)
            except ModelLoadError:
                self.metrics.model_loads.labels("failed").inc()
                raise
            finally:
                self._loading = None
            self.metrics.model_loads.labels("ok").inc()
            return ServingModel(version, predictor)

    def _load_predictor(self, version: VersionRef) -> Predictor:
        path = self.cache_dir / f"{version.sha256}.pt"
        for attempt in (1, 2):
            if not path.is_file():
                self._download(version, path)
            try:
                predictor = self._predictor(path, version)
            except CheckpointError as exc:
                # A damaged cache file is re-downloaded once; a damaged stored artifact fails twice.
                path.unlink(missing_ok=True)
                if attempt == 2:
                    raise ModelLoadError(str(exc)) from exc
                continue
            _warm_up(predictor)
            log.info(
                "loaded model version %s (%s, sha256 %s…) on %s",
                version.id,
                version.name,
                version.sha256[:12],
                predictor.backend,
            )
            return predictor
        raise AssertionError("unreachable")

    def backend_for_device(self) -> str:
        """The backend ``inference_backend`` asks for on this process's device ("auto" resolved)."""
        wanted = self.settings.inference_backend
        if wanted != "auto":
            return wanted
        return ONNX_FP32 if resolve_device(self.settings.device).type == "cpu" else TORCH_BACKEND

    def _predictor(self, path: Path, version: VersionRef) -> Predictor:
        def build(backend: str, threads: int | None = None) -> Predictor:
            return Predictor(
                path,
                device=self.settings.device,
                expected_sha256=version.sha256,
                max_pixels=self.settings.max_image_pixels,
                backend=backend,
                threads=threads,
            )

        backend = self.backend_for_device()
        if backend != TORCH_BACKEND:
            try:
                return build(backend, self.threads)
            except CheckpointError:
                raise  # the weights themselves are bad: no backend can serve them
            # ValueError: backend=onnx asked for with a GPU device.
            except (BackendUnavailableError, ValueError) as exc:
                log.warning("model version %s: %s; serving it with eager PyTorch", version.id, exc)
        return build(TORCH_BACKEND)

    def _download(self, version: VersionRef, path: Path) -> None:
        try:
            # The stores write to a temporary name and rename, so a concurrent reader (another worker
            # process sharing the cache) never sees half a checkpoint.
            self.artifacts.download(version.artifact_key, path)
        except ArtifactNotFound as exc:
            raise ModelLoadError(
                f"checkpoint {version.artifact_key!r} is missing from the artifact store"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - S3/network errors: report, keep serving the old model
            raise ModelLoadError(f"downloading {version.artifact_key!r} failed: {exc}") from exc

    def install(self, model: ServingModel) -> bool:
        """Serve ``model`` from now on, unless a more recently promoted one is already installed."""
        with self._swap_lock:
            current = self._current
            if current is not None and _stamp(model.version) < _stamp(current.version):
                return False
            self._set(model)
            self._error = None
            return True

    def _set(self, model: ServingModel | None) -> None:
        # One reference assignment: readers see the old model or the new one, never a mix.
        self._current = model
        if model is None:
            self.metrics.set_active_model(None)
        else:
            self.metrics.set_active_model(model.version.id, model.version.name, model.version.sha256)


def _stamp(version: VersionRef) -> datetime:
    return version.promoted_at or _EPOCH


@torch.inference_mode()
def _warm_up(predictor: Predictor) -> None:
    """One forward pass before serving: the first call pays for allocator and kernel setup."""
    size = predictor.preprocessing.image_size
    predictor.predict_tensors(torch.zeros(1, 3, size, size))
