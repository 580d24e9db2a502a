"""The decode pool shared round-robin between API keys, with a backlog per key (api/fair_decode.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from api.fair_decode import DecodeBacklogFull, FairDecoder


def test_a_key_with_many_jobs_waits_behind_one_job_of_each_other_key() -> None:
    decoder = FairDecoder(threads=1, per_key_backlog=100)
    gate = threading.Event()
    order: list[str] = []

    def job(name: str) -> str:
        if name == "a0":
            gate.wait(10)  # hold the only thread until every job is queued
        order.append(name)
        return name

    async def scenario() -> list[str]:
        flood = [asyncio.create_task(decoder.run(job, f"a{i}", key="a")) for i in range(6)]
        await asyncio.sleep(0.05)
        others = [
            asyncio.create_task(decoder.run(job, "b0", key="b")),
            asyncio.create_task(decoder.run(job, "c0")),
        ]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*flood, *others)

    try:
        results = asyncio.run(scenario())
    finally:
        decoder.shutdown()
    assert sorted(results) == sorted(order)
    # a0 ran first and a1 was next in line when b and the anonymous lane arrived; after that they each had
    # their turn before a's third job, not after all six of a's.
    assert order == ["a0", "a1", "b0", "c0", "a2", "a3", "a4", "a5"]
    assert decoder.backlog("a") == decoder.backlog("b") == 0


def test_a_key_past_its_backlog_is_refused_but_one_request_always_goes_through() -> None:
    decoder = FairDecoder(threads=1, per_key_backlog=20)
    gate = threading.Event()

    async def scenario() -> None:
        first = asyncio.create_task(decoder.run(gate.wait, 10, key=7, cost=16))
        await asyncio.sleep(0.05)
        assert decoder.backlog(7) == 16
        with pytest.raises(DecodeBacklogFull, match="already has 16 photos waiting to be decoded"):
            await decoder.run(lambda: None, key=7, cost=16)
        # another key is not affected, and a key with nothing waiting may send more than the backlog
        other = asyncio.create_task(decoder.run(lambda: "ok", key=8, cost=30))
        await asyncio.sleep(0.05)
        gate.set()
        assert await first is True and await other == "ok"

    try:
        asyncio.run(scenario())
    finally:
        decoder.shutdown()
    assert decoder.backlog(7) == 0


def test_errors_reach_the_caller_and_free_the_slot() -> None:
    decoder = FairDecoder(threads=1, per_key_backlog=4)

    def broken() -> None:
        raise ValueError("bad pixels")

    async def scenario() -> str:
        with pytest.raises(ValueError, match="bad pixels"):
            await decoder.run(broken, key=1, cost=4)
        return await decoder.run(lambda: "next", key=1, cost=4)

    try:
        assert asyncio.run(scenario()) == "next"
    finally:
        decoder.shutdown()
