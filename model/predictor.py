"""Batched prediction from a checkpoint: images in, counts with class probabilities out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

import numpy as np
import torch

from model.checkpoint import load_model
from model.logits import softmax
from model.onnx_backend import TORCH_BACKEND, OnnxForward, build_forward, check_backend
from model.preprocess import ImageInput, preprocess
from model.training import resolve_device


@dataclass(frozen=True)
class Prediction:
    count: int  # the predicted class's count; for the overflow class its lower bound (6 for "6+")
    label: str  # "3", "6+"
    is_overflow: bool
    confidence: float  # probability of the predicted class
    probabilities: dict[str, float]  # label -> probability, summing to 1

    def to_dict(self) -> dict[str, object]:
        return {
            "count": self.count,
            "label": self.label,
            "is_overflow": self.is_overflow,
            "confidence": self.confidence,
            "probabilities": self.probabilities,
        }


class Predictor:
    """Loads a checkpoint once; ``predict`` counts a batch of images (bytes, paths or PIL images).

    Thread-safe: one forward pass at a time, since the backend already uses every core for one batch.

    ``backend`` runs the forward pass only; decoding, preprocessing, temperature and class mapping are the
    same for every backend:

    - ``"torch"`` (default): eager fp32 PyTorch, channels-last — the reference every other backend is
      checked against, and the fallback;
    - ``"onnx"``: the same fp32 network through ONNX Runtime on the CPU (same labels, several times faster
      on the serving CPU; docs/performance.md), exported once and cached next to the checkpoint
      (or in ``onnx_cache_dir``).

    ``threads`` is ONNX Runtime's intra-op thread count (default: ``torch.get_num_threads()``); torch's own
    pool is process-wide and stays whatever ``torch.set_num_threads`` made it. ``onnx_spinning`` lets idle
    ONNX Runtime threads busy-wait between batches (faster back-to-back batches, slower decoding beside
    them; see model.onnx_backend.make_session). An ONNX backend that cannot be provided raises
    ``model.onnx_backend.BackendUnavailableError``, whose message names the torch fallback.

    ``decode_threads`` > 1 makes ``predict`` decode and preprocess a batch's images on that many threads
    (Pillow and the tensor maths release the GIL), before the forward pass runs on all of them: on a 2-core
    CPU decoding is about half the bytes-to-counts time with the ONNX backend (docs/performance.md).
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        expected_sha256: str | None = None,
        max_pixels: int = 50_000_000,
        backend: str = TORCH_BACKEND,
        threads: int | None = None,
        onnx_cache_dir: str | Path | None = None,
        onnx_spinning: bool = False,
        decode_threads: int = 1,
    ) -> None:
        check_backend(backend)  # before the (slow) load: a typo fails fast
        if decode_threads < 1:
            raise ValueError(f"decode_threads must be at least 1, got {decode_threads}")
        if backend != TORCH_BACKEND:
            # ONNX Runtime runs on the CPU here; "auto" must not pick a GPU the session would not use.
            if device == "auto":
                device = "cpu"
            if resolve_device(device).type != "cpu":
                raise ValueError(f"backend {backend!r} runs on the CPU; use device='cpu' or backend='torch'")
        loaded = load_model(path, expected_sha256)
        self.device = resolve_device(device)
        self.backend = backend
        self.classes = loaded.classes
        self.labels = loaded.classes.labels
        self.preprocessing = loaded.preprocessing.__class__(
            **{**loaded.preprocessing.__dict__, "max_pixels": max_pixels}
        )
        self.onnx: OnnxForward | None = None
        if backend != TORCH_BACKEND:
            # Exported from the plain (NCHW, fp32, CPU) network, before the channels-last conversion below.
            self.onnx = build_forward(
                backend,
                loaded.net,
                Path(path),
                loaded.sha256,
                self.preprocessing.image_size,
                threads=threads,
                cache_dir=onnx_cache_dir,
                spinning=onnx_spinning,
            )
        # channels-last on every device: on this 2-core CPU it makes batches of 16 2.8x faster for
        # EfficientNet-Lite0's depthwise convolutions and 1.2x for ResNet18 (README, Benchmarks).
        # Kept for ONNX backends too: it is the reference to compare with and costs only its weights.
        self.net = loaded.net.to(self.device).to(memory_format=torch.channels_last)
        self._forward: Callable[[torch.Tensor], np.ndarray] = (
            self.onnx if self.onnx is not None else self._torch_forward
        )
        self.temperature = float(loaded.metadata.get("temperature") or 1.0)
        self.metadata = loaded.metadata
        self.sha256 = loaded.sha256
        self._lock = Lock()
        self._decoders = (
            ThreadPoolExecutor(decode_threads, thread_name_prefix="binwatch-predict-decode")
            if decode_threads > 1
            else None
        )

    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """Decode and normalise one image; raises model.preprocess.ImageDecodeError for bad input."""
        return preprocess(image, self.preprocessing)

    @torch.inference_mode()
    def predict_tensors(self, batch: torch.Tensor) -> list[Prediction]:
        with self._lock:
            logits = self._forward(batch)
        return [self._prediction(p) for p in softmax(logits, self.temperature)]

    def logits(self, batch: torch.Tensor) -> np.ndarray:
        """Raw logits (before temperature) from this Predictor's backend: for comparing backends."""
        with self._lock, torch.inference_mode():
            return self._forward(batch)

    def _torch_forward(self, batch: torch.Tensor) -> np.ndarray:
        x = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        return self.net(x).float().cpu().numpy()

    def predict(self, images: Sequence[ImageInput]) -> list[Prediction]:
        if not images:
            return []
        if self._decoders is None or len(images) == 1:
            tensors = [self.preprocess(img) for img in images]
        else:
            # In order; the first image that fails to decode raises here, as in the serial loop.
            tensors = list(self._decoders.map(self.preprocess, images))
        return self.predict_tensors(torch.stack(tensors))

    def _prediction(self, probs: np.ndarray) -> Prediction:
        idx = int(probs.argmax())
        return Prediction(
            count=self.classes.count_of(idx),
            label=self.labels[idx],
            is_overflow=self.classes.is_overflow(idx),
            confidence=float(probs[idx]),
            probabilities={label: float(p) for label, p in zip(self.labels, probs, strict=True)},
        )
