"""Running preprocessed images through the batcher, with its failures mapped to problems."""

from __future__ import annotations

import torch

from api.batcher import BatcherStopped, BatchResult, QueueFull
from api.deps import AppState
from api.model_manager import ServingModel
from api.problems import OVERLOADED, Problem


async def infer(state: AppState, model: ServingModel, tensors: list[torch.Tensor]) -> list[BatchResult]:
    try:
        return await state.batcher.predict(model, tensors)
    except QueueFull as exc:
        raise Problem(
            503,
            f"the inference queue is full ({exc}); retry shortly",
            type=OVERLOADED,
            title="Overloaded",
            headers={"Retry-After": "1"},
        ) from exc
    except BatcherStopped as exc:
        raise Problem(
            503, "the service is shutting down; retry on another instance", headers={"Retry-After": "1"}
        ) from exc
