"""The inference batcher with real predictors: batching, bounded queue, per-model grouping, cancellation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from api.batcher import Batcher, BatcherStopped, QueueFull
from api.metrics import Metrics
from api.model_manager import ServingModel, VersionRef
from model.predictor import Predictor
from tests.api.support import originals

pytestmark = pytest.mark.slow


def serving(path: Path, version_id: int) -> ServingModel:
    predictor = Predictor(path, device="cpu")
    ref = VersionRef(version_id, f"v{version_id}", predictor.sha256, "k", datetime.now(UTC))
    return ServingModel(ref, predictor)


@pytest.fixture(scope="module")
def models(checkpoints: tuple[Path, Path]) -> tuple[ServingModel, ServingModel]:
    return serving(checkpoints[0], 1), serving(checkpoints[1], 2)


@pytest.fixture(scope="module")
def tensors(models: tuple[ServingModel, ServingModel]) -> list[torch.Tensor]:
    # Both tiny checkpoints preprocess identically (64 px), so one set of tensors serves both.
    return [models[0].predictor.preprocess(p) for p in originals(6)]


def make_batcher(**kw: float) -> tuple[Batcher, Metrics]:
    metrics = Metrics()
    args = {"max_size": 4, "max_wait_s": 0.05, "queue_size": 64}
    args.update(kw)
    return Batcher(metrics=metrics, **args), metrics  # type: ignore[arg-type]


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return float(value or 0.0)


def test_concurrent_requests_share_batches_and_get_their_own_answers(models, tensors) -> None:  # noqa: ANN001
    model = models[0]
    batcher, metrics = make_batcher(max_size=4, max_wait_s=0.2)
    batcher.start()

    async def many() -> list:
        return await asyncio.gather(*(batcher.predict(model, [t]) for t in tensors))

    try:
        results = [r[0] for r in asyncio.run(many())]
    finally:
        batcher.stop()
    alone = model.predictor.predict_tensors(torch.stack(tensors))
    for got, want in zip(results, alone, strict=True):
        assert got.model is model
        assert got.prediction.label == want.label
        assert got.prediction.confidence == pytest.approx(want.confidence, abs=1e-4)
    sizes = [r.batch_size for r in results]
    assert max(sizes) > 1 and max(sizes) <= 4
    assert sample(metrics, "binwatch_inference_batch_size_sum") == len(tensors)
    assert sample(metrics, "binwatch_inference_batch_size_count") < len(tensors)
    assert sample(metrics, "binwatch_inference_queue_depth") == 0


def test_a_full_queue_refuses_whole_requests(models, tensors) -> None:  # noqa: ANN001
    batcher, _ = make_batcher(queue_size=3)  # not started: nothing is taken off the queue
    batcher.submit(models[0], tensors[:2])
    with pytest.raises(QueueFull, match="2 images are already waiting"):
        batcher.submit(models[0], tensors[:2])  # would make 4: none of them is queued
    assert batcher.depth == 2
    batcher.submit(models[0], tensors[:1])
    assert batcher.depth == 3
    batcher.start()
    batcher.stop()
    assert batcher.depth == 0


def test_each_image_runs_on_the_model_it_was_prepared_for(models, tensors) -> None:  # noqa: ANN001
    first, second = models
    batcher, metrics = make_batcher(max_size=8)
    futures = []
    for i, tensor in enumerate(tensors):
        futures += batcher.submit(first if i % 2 == 0 else second, [tensor])
    batcher.start()
    results = [f.result(timeout=60) for f in futures]
    batcher.stop()
    for i, (tensor, result) in enumerate(zip(tensors, results, strict=True)):
        model = first if i % 2 == 0 else second
        assert result.model is model
        want = model.predictor.predict_tensors(tensor.unsqueeze(0))[0]
        assert result.prediction.probabilities == pytest.approx(want.probabilities, abs=1e-4)
    # one taken batch, split into one forward pass per model
    assert sample(metrics, "binwatch_inference_batch_size_count") == 2
    assert first.predictor.predict_tensors(tensors[0].unsqueeze(0))[0].probabilities != pytest.approx(
        second.predictor.predict_tensors(tensors[0].unsqueeze(0))[0].probabilities, abs=1e-6
    ), "the two checkpoints must differ for this test to mean anything"


def test_cancelled_requests_are_skipped(models, tensors) -> None:  # noqa: ANN001
    batcher, metrics = make_batcher()
    gone = batcher.submit(models[0], tensors[:2])
    kept = batcher.submit(models[0], tensors[2:3])
    assert all(f.cancel() for f in gone)
    batcher.start()
    assert kept[0].result(timeout=60).batch_size == 1
    batcher.stop()
    assert sample(metrics, "binwatch_inference_batch_size_sum") == 1


def test_after_stop_nothing_is_accepted(models, tensors) -> None:  # noqa: ANN001
    batcher, _ = make_batcher()
    batcher.start()
    batcher.stop()
    with pytest.raises(BatcherStopped):
        batcher.submit(models[0], tensors[:1])
