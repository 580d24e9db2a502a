"""The inference batcher with real predictors: batching, bounded queue, per-model grouping, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import ExitStack
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
        # As the routes do: every request announces its image before decoding it, so a batch knows
        # more are coming and waits for them.
        with ExitStack() as stack:
            tickets = [stack.enter_context(batcher.announce(1)) for _ in tensors]
            return await asyncio.gather(
                *(batcher.predict(model, [t], ticket) for t, ticket in zip(tensors, tickets, strict=True))
            )

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


def test_a_lone_request_does_not_wait_for_a_batch_that_is_not_coming(models, tensors) -> None:  # noqa: ANN001
    model = models[0]
    batcher, _ = make_batcher(max_size=16, max_wait_s=2.0)
    batcher.start()
    try:
        model.predictor.predict_tensors(tensors[0].unsqueeze(0))  # warm up outside the timing

        async def lone() -> float:
            start = time.perf_counter()
            with batcher.announce(1) as ticket:
                await batcher.predict(model, tensors[:1], ticket)
            return time.perf_counter() - start

        # Nothing else announced: it runs at once instead of waiting out the 2 s window.
        assert asyncio.run(lone()) < 1.0

        # Another request still decoding its image: the batch waits for it, and they share one pass.
        with batcher.announce(1) as slow_ticket:
            first = batcher.submit(model, tensors[1:2])
            threading.Timer(0.3, lambda: batcher.submit(model, tensors[2:3], slow_ticket)).start()
            assert first[0].result(timeout=10).batch_size == 2
        # A request that fails while decoding withdraws its announcement: nobody waits for it.
        with pytest.raises(RuntimeError), batcher.announce(3):
            raise RuntimeError("corrupt image")
        start = time.perf_counter()
        assert batcher.submit(model, tensors[3:4])[0].result(timeout=10).batch_size == 1
        assert time.perf_counter() - start < 1.0
    finally:
        batcher.stop()
