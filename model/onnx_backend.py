"""ONNX Runtime forward pass for the Predictor: the fast path beside the eager fp32 PyTorch reference.

``Predictor(path, backend="onnx")`` runs only the network's forward pass through ONNX Runtime (CPU); decoding,
preprocessing, temperature and class mapping stay the Predictor's own, shared with ``backend="torch"``. On the
2-core serving CPU the fp32 ONNX graph runs the forward pass several times faster than eager PyTorch and gives
the same labels (docs/performance.md, which also has why there is no int8 backend: static int8 quantisation
was faster again but cost 0.3-1.0 point of 0-5 validation accuracy).

The ONNX file is exported once per checkpoint and cached next to it (or in ``cache_dir``):
``onnx-<sha256 of the checkpoint, 16 hex>.ort-<onnxruntime version>.<variant>.v<EXPORT_VERSION>.onnx`` with a
json beside it recording the full checkpoint sha256 and the ONNX file's own sha256. A cached file is used only
when both hashes match, so a swapped or damaged ONNX file is rebuilt, never served: the same guarantee the
checkpoint's sidecar gives the weights.

Every failure to provide an ONNX backend raises ``BackendUnavailableError``, whose message names the fallback
(``backend="torch"``); the caller decides whether to fall back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover - typing only; onnxruntime is imported when a backend is built
    import onnxruntime

log = logging.getLogger(__name__)

TORCH_BACKEND = "torch"
ONNX_FP32 = "onnx"
BACKENDS: tuple[str, ...] = (TORCH_BACKEND, ONNX_FP32)
# Backend -> the precision tag in its cache file names.
VARIANTS = {ONNX_FP32: "fp32"}

CACHE_FORMAT = "binwatch-onnx-cache/1"
# Part of every cache file name: bump it when the export settings below change, so files
# made the old way are no longer picked up.
EXPORT_VERSION = 1
OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
# Exported logits must match eager ones this closely (on a random batch) or the export is refused; fp32
# round-off between two kernel libraries is ~1e-5 on this network's logits.
EXPORT_ATOL = 1e-3

# How many ONNX files this process exported: lets tests (and logs) show the cache is reused.
build_counts: Counter[str] = Counter()


class BackendUnavailableError(RuntimeError):
    """An ONNX Runtime backend cannot be provided; the eager PyTorch backend can still serve."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(
            f"inference backend {backend!r} is unavailable: {reason}. "
            f"Fall back to backend={TORCH_BACKEND!r} (eager fp32 PyTorch, the reference path)."
        )


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown inference backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def _onnxruntime(backend: str) -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            backend, f"onnxruntime is not installed ({exc}); pip install the version pinned in pyproject.toml"
        ) from exc
    return onnxruntime


def ort_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CachePaths:
    model: Path
    metadata: Path


def cache_paths(directory: Path, checkpoint_sha256: str, variant: str, ort: str) -> CachePaths:
    # The onnxruntime version is in the name because the opsets it accepts and its optimiser are tied to
    # it: an upgrade exports afresh instead of trusting a file made for another runtime.
    stem = f"onnx-{checkpoint_sha256[:16]}.ort-{ort}.{variant}.v{EXPORT_VERSION}"
    return CachePaths(directory / f"{stem}.onnx", directory / f"{stem}.json")


def _atomic_write(path: Path, data: bytes) -> None:
    # Other serving processes may share the folder: they must see the old file or the whole new one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_cached(paths: CachePaths, checkpoint_sha256: str) -> tuple[bytes, dict[str, Any]] | None:
    """The cached ONNX bytes and metadata, or None when absent or not provably this checkpoint's."""
    try:
        meta = json.loads(paths.metadata.read_text())
        data = paths.model.read_bytes()
    except (OSError, json.JSONDecodeError):
        return None
    if (
        not isinstance(meta, dict)
        or meta.get("format") != CACHE_FORMAT
        or meta.get("checkpoint_sha256") != checkpoint_sha256
        or meta.get("onnx_sha256") != _sha256(data)
    ):
        log.warning(
            "ignoring ONNX cache %s: it does not match checkpoint %s…", paths.model, checkpoint_sha256[:12]
        )
        return None
    return data, meta


def write_cache(paths: CachePaths, data: bytes, meta: dict[str, Any]) -> bool:
    """Store a built model; False (and a warning) when the folder is not writable: serving still works."""
    try:
        paths.model.parent.mkdir(parents=True, exist_ok=True)
        # Model first, metadata second: metadata naming a model that is not there yet is never visible.
        _atomic_write(paths.model, data)
        _atomic_write(paths.metadata, json.dumps(meta, indent=2).encode())
    except OSError as exc:
        log.warning(
            "cannot cache ONNX model at %s (%s); it will be rebuilt on the next start", paths.model, exc
        )
        return False
    return True


def export_onnx(net: torch.nn.Module, image_size: int) -> bytes:
    """The network as an fp32 ONNX graph with a dynamic batch axis, checked against eager on a random batch.

    Uses the TorchScript-based exporter (``dynamo=False``): it needs only the onnx package (the
    torch.export-based default needs onnxscript too) and exports this network in about half a second.
    Batch norm is folded into the convolutions by the exporter's constant folding (eval mode).
    """
    net = net.eval().to("cpu", torch.float32)
    probe = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="binwatch-onnx-") as tmp, warnings.catch_warnings():
        # The exporter warns about its own deprecation and, once per padding layer, about constant folding
        # of strided slices; neither is actionable here and they would flood the service log.
        warnings.simplefilter("ignore")
        out = Path(tmp) / "model.onnx"
        torch.onnx.export(
            net,
            (probe,),
            str(out),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
        data = out.read_bytes()
    with torch.inference_mode():
        expected = net(probe).float().numpy()
    got = np.asarray(run_session(make_session(data, threads=1), probe.numpy()))
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=EXPORT_ATOL):
        worst = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("nan")
        raise RuntimeError(f"exported ONNX logits differ from eager PyTorch by up to {worst:.3g}")
    return data


def make_session(
    model: bytes | str | Path, threads: int, spinning: bool = False
) -> onnxruntime.InferenceSession:
    """A CPU session: full graph optimisation, ``threads`` intra-op threads, no inter-op parallelism.

    One forward pass at a time uses every core it is given (the Predictor serialises calls), so a second pool
    for parallel branches (inter-op) would only add threads contending for the same cores.

    ``spinning=False`` stops idle intra-op threads from busy-waiting for the next batch. Busy-waiting makes
    back-to-back forward passes faster (+24% at batch 1, +3% at 16), but in a server the cores between
    batches belong to JPEG decoding: with spinning on, decode + forward from bytes ran at 0.57x the rate at
    batch 1 and 0.78x at batch 16 on the 2-core machine (docs/performance.md).
    """
    ort = _onnxruntime(ONNX_FP32)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def run_session(session: onnxruntime.InferenceSession, batch: np.ndarray) -> np.ndarray:
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]


@dataclass
class OnnxForward:
    """The forward pass through ONNX Runtime: a float32 NCHW batch in, logits (numpy) out."""

    session: onnxruntime.InferenceSession
    backend: str
    threads: int
    model_path: Path | None  # None when the cache folder was not writable
    metadata: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool = False

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        # .contiguous() gives NCHW order: .numpy() of a channels-last tensor keeps its strides, and ONNX
        # Runtime reads a plain buffer, so it would see scrambled pixels.
        x = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        return run_session(self.session, x)


def build_forward(
    backend: str,
    net: torch.nn.Module,
    checkpoint: Path,
    checkpoint_sha256: str,
    image_size: int,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    spinning: bool = False,
) -> OnnxForward:
    """The ONNX Runtime forward pass for ``backend``, from the cache or built (and cached) now.

    ``cache_dir`` defaults to the checkpoint's folder. Any failure is a BackendUnavailableError naming the
    torch fallback.
    """
    if backend not in VARIANTS:
        raise ValueError(f"{backend!r} is not an ONNX backend; choose one of {', '.join(VARIANTS)}")
    ort = _onnxruntime(backend)
    threads = torch.get_num_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    directory = Path(cache_dir) if cache_dir is not None else checkpoint.parent
    paths = cache_paths(directory, checkpoint_sha256, VARIANTS[backend], ort.__version__)
    cached = read_cached(paths, checkpoint_sha256)
    stored = cached is not None
    try:
        if cached is not None:
            data, meta = cached
        else:
            data, meta = _build(backend, net, checkpoint_sha256, image_size)
            stored = write_cache(paths, data, meta)
        # From the bytes in hand, not the file: another process may replace the file meanwhile.
        session = make_session(data, threads, spinning)
    except BackendUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001 - exporter/runtime errors come in many types
        raise BackendUnavailableError(backend, f"{type(exc).__name__}: {exc}") from exc
    return OnnxForward(
        session=session,
        backend=backend,
        threads=threads,
        model_path=paths.model if stored else None,
        metadata=meta,
        cache_hit=cached is not None,
    )


def _build(
    backend: str, net: torch.nn.Module, checkpoint_sha256: str, image_size: int
) -> tuple[bytes, dict[str, Any]]:
    ort = _onnxruntime(backend)
    started = time.perf_counter()
    data = export_onnx(net, image_size)
    meta: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "variant": VARIANTS[backend],
        "checkpoint_sha256": checkpoint_sha256,
        "onnx_sha256": _sha256(data),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "opset": OPSET,
        "export_version": EXPORT_VERSION,
        "image_size": image_size,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    build_counts[backend] += 1
    log.info(
        "exported the %s ONNX model for checkpoint %s… in %.1fs",
        backend,
        checkpoint_sha256[:12],
        meta["build_seconds"],
    )
    return data, meta
