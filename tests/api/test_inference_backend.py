"""BINWATCH_INFERENCE_BACKEND through the API: ONNX Runtime by default on the CPU, the same counts as the
eager PyTorch reference over HTTP on real photos, and eager PyTorch when ONNX cannot serve a model."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.api.conftest import Service
from tests.api.support import originals
from tests.conftest import ABID

pytestmark = pytest.mark.slow


def real_photos() -> list[tuple[str, tuple[str, bytes, str]]]:
    """8 full-size originals and 8 224 px bin images: both sizes the service is sent."""
    bins = sorted((ABID / "bin-images").glob("*.jpg"))[:8]
    paths = originals(8) + bins
    return [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def serve(make_service: Callable[..., Service], checkpoint: Path, **settings: object) -> Service:
    svc = make_service(**settings)
    svc.wait_serving(svc.register(checkpoint).id)
    return svc


def predictions(svc: Service) -> list[dict]:
    response = svc.client.post("/v1/predictions", headers=svc.headers(), files=real_photos())
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_auto_serves_onnx_on_the_cpu_with_the_reference_counts(
    make_service: Callable[..., Service], checkpoints: tuple[Path, Path]
) -> None:
    fast = serve(make_service, checkpoints[0])  # inference_backend defaults to auto; device is cpu
    reference = serve(make_service, checkpoints[0], inference_backend="torch")
    assert fast.client.get("/readyz").json()["backend"] == "onnx"
    assert reference.client.get("/readyz").json()["backend"] == "torch"
    # The ONNX file is cached beside the downloaded checkpoint in the model cache.
    assert list(fast.settings.model_cache_dir.glob("onnx-*.onnx"))
    assert not list(reference.settings.model_cache_dir.glob("onnx-*"))

    got, want = predictions(fast), predictions(reference)
    assert len(got) == len(want) == 16
    for g, w in zip(got, want, strict=True):
        assert (g["filename"], g["label"], g["count"]) == (w["filename"], w["label"], w["count"])
        for label, p in w["probabilities"].items():
            assert g["probabilities"][label] == pytest.approx(p, abs=1e-4)


def test_a_model_onnx_cannot_serve_is_served_by_eager_pytorch(
    make_service: Callable[..., Service],
    checkpoints: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # onnxruntime not installed (a slim image): None in sys.modules makes `import onnxruntime` fail.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    caplog.set_level(logging.WARNING, logger="binwatch.api.models")
    svc = serve(make_service, checkpoints[0], inference_backend="onnx")
    assert svc.client.get("/readyz").json()["backend"] == "torch"
    assert any(
        "onnxruntime" in r.getMessage() and "serving it with eager PyTorch" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    assert len(predictions(svc)) == 16
