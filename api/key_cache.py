"""A short-lived, per-process cache of authenticated API keys.

Every ``/v1`` request authenticates (api/auth_gate.py); without a cache that is one database query per
request, 5% of a prediction's server time on SQLite. A key seen valid less than ``ttl`` seconds ago is
taken as valid again without asking. Revocation (``binwatch apikeys revoke``, another process) therefore
takes effect within ``ttl`` seconds in every API process (BINWATCH_API_KEY_CACHE_SECONDS, default 5;
0 turns the cache off). Invalid keys are never cached: a wrong key always costs a lookup, so a newly
created key works at once.

Entries are keyed by the secret's sha256, never the secret; the cache is bounded (oldest dropped first).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class KeyCache(Generic[T]):
    def __init__(self, ttl_s: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _digest(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    def get(self, secret: str) -> T | None:
        if self.ttl_s <= 0:
            return None
        digest = self._digest(secret)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            expires, value = entry
            if self._clock() >= expires:
                del self._entries[digest]
                return None
            return value

    def put(self, secret: str, value: T) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._entries[self._digest(secret)] = (self._clock() + self.ttl_s, value)
            self._entries.move_to_end(self._digest(secret))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
