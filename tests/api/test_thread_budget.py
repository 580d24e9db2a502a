"""The thread budget (api/thread_budget.py): split the cores between workers, torch and decoding; never
more threads than cores by default; overridable; applied and exported by the app."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from api.thread_budget import available_cores, plan
from settings import Settings
from tests.api.conftest import Service


def budget(**values: object):  # noqa: ANN201
    return plan(Settings(_env_file=None, **values))  # type: ignore[arg-type]


def test_cores_are_shared_between_workers_torch_and_decoding() -> None:
    assert (budget(cpu_cores=2).torch_threads, budget(cpu_cores=2).decode_threads) == (2, 1)
    two = budget(cpu_cores=2, workers=2)
    assert (two.cores, two.torch_threads, two.decode_threads) == (1, 1, 1)
    big = budget(cpu_cores=64, workers=4)
    assert (big.cores, big.torch_threads, big.decode_threads) == (16, 16, 4)
    # More workers than cores: each still gets one thread of each kind.
    assert budget(cpu_cores=2, workers=8).torch_threads == 1
    overridden = budget(cpu_cores=16, torch_threads=3, decode_threads=5)
    assert (overridden.torch_threads, overridden.decode_threads) == (3, 5)
    assert budget().host_cores == available_cores() >= 1
    assert "2 torch threads and 1 decode thread per worker" in budget(cpu_cores=2).describe()


def test_the_app_applies_and_exports_its_budget(make_service: Callable[..., Service]) -> None:
    before = torch.get_num_threads()
    try:
        svc = make_service(cpu_cores=3, decode_threads=2)
        # Where the forward pass runs: OpenMP thread counts are per thread.
        batcher = svc.client.app.state.binwatch.batcher
        deadline = time.monotonic() + 10
        while batcher.torch_threads_in_use is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.torch_threads_in_use == 3
        text = svc.client.get("/metrics").text
        assert 'binwatch_threads{kind="torch"} 3.0' in text and 'binwatch_threads{kind="decode"} 2.0' in text
    finally:
        torch.set_num_threads(before)  # the rest of the test session keeps its own setting
