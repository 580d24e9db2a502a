"""The Optuna storage that tuning jobs' studies live in, shared by the API (which creates and reads studies)
and the workers (whose trials ask and tell).

It is binwatch's own database: on Postgres the ``optuna`` schema (Optuna's tables include an
``alembic_version`` of its own, which would collide with binwatch's), on the embedded default a SQLite
file beside binwatch's. ``Settings.resolved_tuning_storage_url`` derives the URL; one storage object per
process and URL, since building one checks Optuna's schema version.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import optuna

_storages: dict[str, Any] = {}
_lock = threading.Lock()


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """This process's storage for ``url`` (created on first use; Optuna creates its tables if missing)."""
    import optuna

    with _lock:
        storage = _storages.get(url)
        if storage is None:
            engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
            if url.startswith("sqlite"):
                # Several worker processes write to one file: wait for the lock instead of failing.
                engine_kwargs = {"connect_args": {"timeout": 60}}
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
            _storages[url] = storage
        return storage


def load_study(url: str, name: str) -> optuna.Study:
    import optuna

    return optuna.load_study(study_name=name, storage=open_storage(url))
