"""Request dependencies: the app's shared state, database sessions, API-key authentication."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import Headers

from api.batcher import Batcher
from api.fair_decode import FairDecoder
from api.key_cache import KeyCache
from api.metrics import Metrics
from api.model_manager import ModelManager, ServingModel
from api.problems import FORBIDDEN, NO_ACTIVE_MODEL, UNAUTHENTICATED, Problem
from api.thread_budget import ThreadBudget
from records import apikeys
from records.artifacts import ArtifactStore
from records.db import session_scope
from settings import Settings

T = TypeVar("T")


@dataclass
class AppState:
    """Everything a request may need, built once per process by the app's lifespan."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    artifacts: ArtifactStore
    models: ModelManager
    batcher: Batcher
    metrics: Metrics
    budget: ThreadBudget
    # Decoding and preprocessing of photos (CPU-bound; sized by the thread budget, api/thread_budget.py),
    # shared round-robin between API keys (api/fair_decode.py).
    decode_pool: FairDecoder
    keys: KeyCache[Principal]

    async def decode(self, fn: Callable[..., T], *args: Any, key: int | None = None, cost: int = 1) -> T:
        """Run ``fn(*args)`` on the decode pool, off the event loop, in ``key``'s turn (``cost`` photos)."""
        return await self.decode_pool.run(fn, *args, key=key, cost=cost)


@dataclass(frozen=True)
class Principal:
    """The authenticated API key, detached from its session."""

    key_id: int
    name: str
    scopes: tuple[str, ...]

    @property
    def actor(self) -> str:
        return f"api-key:{self.name} (id {self.key_id})"


def get_state_from_app(app: Any) -> AppState:
    state = getattr(app.state, "binwatch", None)
    if state is None:
        raise RuntimeError("the app was used without its lifespan (use `with TestClient(app)`)")
    return state


def get_state(request: Request) -> AppState:
    return get_state_from_app(request.app)


def get_settings(request: Request) -> Settings:
    return get_state(request).settings


def get_artifacts(request: Request) -> ArtifactStore:
    return get_state(request).artifacts


def get_db(request: Request) -> Iterator[Session]:
    """A session for one request; the route commits what it wants kept, the rest is rolled back."""
    session = get_state(request).session_factory()
    try:
        yield session
    finally:
        session.close()


api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key (`binwatch apikeys create`)."
)
bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")


# Where api/auth_gate.py leaves the principal it authenticated (request.state).
PRINCIPAL_SCOPE_KEY = "binwatch_principal"


def secret_from_headers(headers: Headers) -> str | None:
    """The API key a request carries (X-API-Key first, then a bearer token), or None."""
    key = headers.get("x-api-key", "").strip()
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def authenticate(state: AppState, secret: str) -> Principal | None:
    """The valid, unrevoked key with this secret, or None: from the key cache (api/key_cache.py) when it
    was valid a moment ago, else one indexed lookup."""
    cached = state.keys.get(secret)
    if cached is not None:
        return cached
    with session_scope(state.session_factory) as session:
        key = apikeys.authenticate(session, secret)
        principal = None if key is None else Principal(key.id, key.name, tuple(key.scopes))
    if principal is not None:
        state.keys.put(secret, principal)
    return principal


def _secret(header_key: str | None, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if header_key:
        return header_key.strip()
    if credentials is not None and credentials.credentials:
        return credentials.credentials.strip()
    return None


def _unauthenticated(detail: str) -> Problem:
    return Problem(
        401, detail, type=UNAUTHENTICATED, title="Unauthenticated", headers={"WWW-Authenticate": "Bearer"}
    )


def require_scope(scope: str | None) -> Callable[..., Principal]:
    """A dependency admitting keys with ``scope`` (admin keys have every scope); None: any valid key."""

    def dependency(
        request: Request,
        header_key: Annotated[str | None, Security(api_key_header)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Principal:
        principal = getattr(request.state, PRINCIPAL_SCOPE_KEY, None)
        if principal is None:  # routes outside the gate's prefix authenticate here
            secret = _secret(header_key, credentials)
            if not secret:
                raise _unauthenticated(
                    "missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>' "
                    "(create one with `binwatch apikeys create`)"
                )
            principal = authenticate(get_state(request), secret)
            if principal is None:
                raise _unauthenticated("invalid or revoked API key")
        allowed = scope is None or scope in principal.scopes or "admin" in principal.scopes
        if not allowed:
            raise Problem(
                403,
                f"API key {principal.name!r} has scopes {', '.join(principal.scopes)}; this needs '{scope}'",
                type=FORBIDDEN,
                title="Insufficient scope",
            )
        return principal

    dependency.__name__ = f"require_{scope or 'any'}_scope"
    return dependency


def require_model(state: Annotated[AppState, Depends(get_state)]) -> ServingModel:
    """The model to use for this request, taken once (a promotion mid-request does not affect it)."""
    model = state.models.current
    if model is not None:
        return model
    status = state.models.status()
    headers = {"Retry-After": str(max(1, int(state.settings.model_poll_seconds)))}
    if status.loading is not None:
        detail = (
            f"model version {status.loading.id} ({status.loading.name}) is loading; retry in a few seconds"
        )
    elif status.error:
        detail = status.error
    elif not status.checked:
        detail = "the service is starting and has not looked for a model yet; retry in a few seconds"
    else:
        detail = NO_MODEL_HELP
    raise Problem(503, detail, type=NO_ACTIVE_MODEL, title="No model available", headers=headers)


NO_MODEL_HELP = (
    "no model version is active. Install the counter that ships with binwatch: "
    "`binwatch models install-default`; or register and promote your own checkpoint: "
    "`binwatch models register runs/latest/best.pt --promote` (train one first with "
    "`binwatch train ../shared/abid --recipe cpu-quick`), or promote a registered version with "
    "POST /v1/models/{id}/promote"
)
