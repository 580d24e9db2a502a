"""The API-key cache (api/key_cache.py): valid keys are remembered for a few seconds, never invalid ones,
revocation lands within the cache time, and turning it off means a lookup per request."""

from __future__ import annotations

from collections.abc import Callable

from api.key_cache import KeyCache
from records import apikeys
from records.db import make_engine, make_session_factory, session_scope
from tests.api.conftest import Service


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_and_the_cache_is_bounded() -> None:
    clock = Clock()
    cache: KeyCache[str] = KeyCache(5.0, max_entries=2, clock=clock)
    cache.put("bw_a", "A")
    assert cache.get("bw_a") == "A" and cache.get("bw_b") is None
    clock.now = 4.9
    assert cache.get("bw_a") == "A"
    clock.now = 5.0
    assert cache.get("bw_a") is None
    for secret in ("bw_1", "bw_2", "bw_3"):
        cache.put(secret, secret)
    assert cache.get("bw_1") is None and cache.get("bw_3") == "bw_3"
    off: KeyCache[str] = KeyCache(0)
    off.put("bw_a", "A")
    assert off.get("bw_a") is None


def _revoke(service: Service, secret: str) -> None:
    engine = make_engine(service.settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            apikeys.revoke_api_key(session, secret[:11])
    finally:
        engine.dispose()


def test_without_the_cache_revocation_is_immediate(make_service: Callable[..., Service]) -> None:
    svc = make_service(api_key_cache_seconds=0)
    key = svc.create_key("predict")
    assert svc.client.get("/v1/models", headers=svc.headers(key)).status_code == 200
    _revoke(svc, key)
    assert svc.client.get("/v1/models", headers=svc.headers(key)).status_code == 401


def test_a_new_key_works_at_once_and_a_wrong_one_is_never_cached(
    make_service: Callable[..., Service],
) -> None:
    svc = make_service(api_key_cache_seconds=60)
    assert svc.client.get("/v1/models", headers={"X-API-Key": "bw_" + "x" * 32}).status_code == 401
    key = svc.create_key("predict")
    assert svc.client.get("/v1/models", headers=svc.headers(key)).status_code == 200
    # Cached now: with a one-minute cache the revoked key keeps working, which is the documented trade.
    _revoke(svc, key)
    assert svc.client.get("/v1/models", headers=svc.headers(key)).status_code == 200
