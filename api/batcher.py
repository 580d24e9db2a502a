"""Dynamic batching: concurrent requests' images share forward passes, off the event loop.

Requests preprocess their images (in the threadpool) and hand the tensors to ``Batcher.predict``, which
queues them and awaits futures. One inference thread takes the first waiting image, waits up to
``batch_max_wait_ms`` for more (up to ``batch_max_size``), runs them as one batch and resolves the
futures. The queue is bounded: when ``batch_queue_size`` images are already waiting, new requests are
refused at once (503) instead of piling up behind work the server cannot finish in time.

A batch waits for more images only while more are *coming*: requests announce their images before
decoding them (``announce``), and the inference thread waits (at most ``batch_max_wait_ms``) only while
announced images are still being decoded. A lone request is never held back for a batch that is not
coming; under load, batches fill up from the requests already in flight.

Each queued image carries the ServingModel it was preprocessed for, and a batch only ever groups images
of the same model: after a promotion, images already queued still run on the model whose preprocessing
they went through, and every result names the version that produced it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from api.metrics import Metrics
from api.model_manager import ServingModel
from model.predictor import Prediction

log = logging.getLogger("binwatch.api.batcher")


class QueueFull(RuntimeError):
    """More images are waiting than ``batch_queue_size`` allows."""


class BatcherStopped(RuntimeError):
    """The service is shutting down."""


@dataclass(frozen=True)
class BatchResult:
    prediction: Prediction
    model: ServingModel
    batch_size: int


@dataclass
class Ticket:
    """Images a request announced and has not queued yet."""

    remaining: int


@dataclass
class _Item:
    model: ServingModel
    tensor: torch.Tensor
    future: Future[BatchResult]


class Batcher:
    def __init__(
        self,
        *,
        max_size: int,
        max_wait_s: float,
        queue_size: int,
        metrics: Metrics,
        torch_threads: int | None = None,
    ) -> None:
        if max_size < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError("batch_max_size and batch_queue_size must be >= 1, batch_max_wait_ms >= 0")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.queue_size = queue_size
        self.metrics = metrics
        self._pending: deque[_Item] = deque()
        # Images announced by requests still decoding them: what a batch can still expect.
        self._announced = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # OpenMP thread counts belong to the thread that sets them: the forward pass runs on the
        # inference thread, so that thread sets its own (api/thread_budget.py decides the number).
        self.torch_threads = torch_threads
        self.torch_threads_in_use: int | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="binwatch-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then end the inference thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def depth(self) -> int:
        return len(self._pending)

    @contextmanager
    def announce(self, images: int) -> Iterator[Ticket]:
        """Say that ``images`` images are about to be queued (pass the ticket to ``predict``)."""
        ticket = Ticket(images)
        with self._cond:
            self._announced += images
        try:
            yield ticket
        finally:
            self._settle(ticket)

    def _settle(self, ticket: Ticket | None) -> None:
        if ticket is None or not ticket.remaining:
            return
        with self._cond:
            self._announced -= ticket.remaining
            ticket.remaining = 0
            # A batch may be waiting for these images: they are not coming (queued, or their request failed).
            self._cond.notify_all()

    def submit(
        self, model: ServingModel, tensors: list[torch.Tensor], ticket: Ticket | None = None
    ) -> list[Future[BatchResult]]:
        """Queue all of one request's images, or none of them (QueueFull / BatcherStopped)."""
        items = [_Item(model, tensor, Future()) for tensor in tensors]
        self._settle(ticket)
        with self._cond:
            if self._stopping:
                raise BatcherStopped("the service is shutting down")
            if len(self._pending) + len(items) > self.queue_size:
                raise QueueFull(
                    f"{len(self._pending)} images are already waiting for inference (limit {self.queue_size})"
                )
            self._pending.extend(items)
            self.metrics.queue_depth.set(len(self._pending))
            self._cond.notify()
        return [item.future for item in items]

    async def predict(
        self, model: ServingModel, tensors: list[torch.Tensor], ticket: Ticket | None = None
    ) -> list[BatchResult]:
        futures = self.submit(model, tensors, ticket)
        # wrap_future: cancelling the request (client gone) cancels the queued items, which are skipped.
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    def _take_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._pending:
                if self._stopping:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait_s
            while len(self._pending) < self.max_size and self._announced > 0 and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [self._pending.popleft() for _ in range(min(self.max_size, len(self._pending)))]
            self.metrics.queue_depth.set(len(self._pending))
        # Claim the futures; those whose request was cancelled in the meantime are dropped here.
        return [item for item in batch if item.future.set_running_or_notify_cancel()]

    def _run(self) -> None:
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        self.torch_threads_in_use = torch.get_num_threads()
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            for model, items in _group_by_model(batch):
                self._infer(model, items)

    def _infer(self, model: ServingModel, items: list[_Item]) -> None:
        start = time.perf_counter()
        try:
            predictions = model.predictor.predict_tensors(torch.stack([item.tensor for item in items]))
        except BaseException as exc:  # noqa: BLE001 - hand the failure to every waiting request
            log.exception(
                "inference failed for a batch of %d on model version %s", len(items), model.version_id
            )
            for item in items:
                item.future.set_exception(exc)
            return
        self.metrics.inference_seconds.observe(time.perf_counter() - start)
        self.metrics.batch_size.observe(len(items))
        for item, prediction in zip(items, predictions, strict=True):
            self.metrics.predictions.labels(prediction.label).inc()
            item.future.set_result(BatchResult(prediction, model, len(items)))


def _group_by_model(batch: list[_Item]) -> list[tuple[ServingModel, list[_Item]]]:
    groups: dict[int, tuple[ServingModel, list[_Item]]] = {}
    for item in batch:
        groups.setdefault(id(item.model), (item.model, []))[1].append(item)
    return list(groups.values())
