"""The decode pool, shared fairly between API keys (issue 24).

Decoding photos is CPU-bound and runs on a few threads (api/thread_budget.py). A plain FIFO pool lets one
key that sends many expensive photos make every other key's one-photo prediction wait behind all of them.

Invariants:

- Work is queued per key and handed to the threads round-robin across the keys that have work waiting:
  a key's next job runs only after every other waiting key has had a turn, so a key waits behind at most
  one job of each other key (plus the jobs already running), however many those keys sent.
- Each key has a backlog: the photos it has queued or decoding. A request that would take a key past
  ``per_key_backlog`` photos is refused at once with ``DecodeBacklogFull`` (the API answers 503 with
  ``Retry-After``); a key with nothing waiting is always admitted, so one request of any allowed size
  goes through.
- Jobs without a key (the console's thumbnails, internal work) share one anonymous lane.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")
ANONYMOUS = "anonymous"


class DecodeBacklogFull(RuntimeError):
    """This key already has its share of photos waiting to be decoded."""


@dataclass
class _Job:
    key: Hashable
    cost: int
    work: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the request went away meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class FairDecoder:
    def __init__(
        self, threads: int, per_key_backlog: int, thread_name_prefix: str = "binwatch-decode"
    ) -> None:
        self.threads = threads
        self.per_key_backlog = per_key_backlog
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=thread_name_prefix)
        self._lock = threading.Lock()
        # key -> its waiting jobs; the order of the keys is the round-robin order.
        self._waiting: OrderedDict[Hashable, deque[_Job]] = OrderedDict()
        self._backlog: Counter[Hashable] = Counter()
        self._running = 0

    def backlog(self, key: Hashable) -> int:
        with self._lock:
            return self._backlog[key]

    async def run(self, fn: Callable[..., T], *args: Any, key: Hashable | None = None, cost: int = 1) -> T:
        """``fn(*args)`` on a decode thread, in ``key``'s turn; ``cost``: how many photos it decodes."""
        key = ANONYMOUS if key is None else key
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            held = self._backlog[key]
            if held and held + cost > self.per_key_backlog:
                raise DecodeBacklogFull(
                    f"this API key already has {held} photos waiting to be decoded (at most "
                    f"{self.per_key_backlog}, BINWATCH_DECODE_BACKLOG_PER_KEY)"
                )
            self._backlog[key] += cost
            self._waiting.setdefault(key, deque()).append(_Job(key, cost, partial(fn, *args), loop, future))
            self._dispatch()
        return await future

    def _dispatch(self) -> None:
        """Start waiting jobs, one key at a time, while threads are free (the lock is held)."""
        while self._running < self.threads and self._waiting:
            key, jobs = self._waiting.popitem(last=False)
            job = jobs.popleft()
            if jobs:
                self._waiting[key] = jobs  # back of the line
            self._running += 1
            self._pool.submit(self._work, job)

    def _work(self, job: _Job) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = job.work()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
            error = exc
        finally:
            with self._lock:
                self._running -= 1
                self._backlog[job.key] -= job.cost
                if self._backlog[job.key] <= 0:
                    del self._backlog[job.key]
                self._dispatch()
        try:
            job.loop.call_soon_threadsafe(_settle, job.future, result, error)
        except RuntimeError:  # the event loop is closed: the app is shutting down
            pass

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None:
        with self._lock:
            waiting = [job for jobs in self._waiting.values() for job in jobs]
            self._waiting.clear()
        for job in waiting:
            try:
                job.loop.call_soon_threadsafe(job.future.cancel)
            except RuntimeError:
                pass
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
