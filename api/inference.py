"""Counting uploaded photos: decode on the decode pool, then the batcher; failures mapped to problems."""

from __future__ import annotations

import torch

from api import images
from api.batcher import BatcherStopped, BatchResult, QueueFull, Ticket
from api.deps import AppState
from api.fair_decode import DecodeBacklogFull
from api.model_manager import ServingModel
from api.problems import OVERLOADED, Problem


async def count_uploads(
    state: AppState, model: ServingModel, uploads: list[images.Upload], key: int | None = None
) -> tuple[list[BatchResult], list[images.ImageInfo]]:
    """Decode, preprocess and count ``uploads`` (Problem 415/422 for bad images, 503 when overloaded).

    ``key``: the API key's id, whose turn on the decode pool the photos take (api/fair_decode.py)."""
    with state.batcher.announce(len(uploads)) as ticket:
        try:
            tensors, infos = await state.decode(
                images.prepare, uploads, model.predictor, state.settings, key=key, cost=len(uploads)
            )
        except DecodeBacklogFull as exc:
            raise overloaded(f"{exc}; retry when your earlier requests have been answered") from exc
        return await infer(state, model, tensors, ticket), infos


def overloaded(detail: str) -> Problem:
    """503 Overloaded with Retry-After: the client should come back in a second."""
    return Problem(503, detail, type=OVERLOADED, title="Overloaded", headers={"Retry-After": "1"})


async def infer(
    state: AppState, model: ServingModel, tensors: list[torch.Tensor], ticket: Ticket | None = None
) -> list[BatchResult]:
    try:
        return await state.batcher.predict(model, tensors, ticket)
    except QueueFull as exc:
        raise overloaded(f"the inference queue is full ({exc}); retry shortly") from exc
    except BatcherStopped as exc:
        raise Problem(
            503, "the service is shutting down; retry on another instance", headers={"Retry-After": "1"}
        ) from exc
