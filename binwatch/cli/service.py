"""`binwatch serve`, `binwatch apikeys create|list|revoke`, `binwatch models register|list|promote`.

The apikeys and models commands work on the database and artifact store directly (the settings'
BINWATCH_DATABASE_URL / BINWATCH_ARTIFACT_STORE, or the embedded default under BINWATCH_HOME), so they
need no running server and no API key; they migrate the database first, like the server does.
"""

from __future__ import annotations

import getpass
import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from binwatch.settings import Settings
from records import apikeys as key_records
from records import model_versions
from records.db import make_engine, make_session_factory, safe_url, session_scope
from records.orm import SCOPES

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # error messages stay greppable, unwrapped

apikeys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")
models_app = typer.Typer(no_args_is_help=True, help="Register checkpoints as model versions and promote one.")

PLOT_FILES = {"confusion_matrix": "confusion_matrix.png", "training_curves": "training_curves.png"}


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        raise fail(f"invalid BINWATCH_* settings: {exc}") from exc


@dataclass
class _Db:
    settings: Settings

    def __enter__(self) -> sa.orm.sessionmaker[sa.orm.Session]:
        from records.migrate import upgrade_database

        url = self.settings.resolved_database_url
        try:
            if self.settings.auto_migrate:
                upgrade_database(url)
            self.engine = make_engine(url)
        except sa.exc.OperationalError as exc:
            raise fail(f"database {safe_url(url)} is unreachable: {exc.orig or exc}") from exc
        return make_session_factory(self.engine)

    def __exit__(self, *exc: object) -> None:
        self.engine.dispose()


# -- serve -------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: get SIGTERM when `binwatch serve` ends, however it ends.

    uvicorn re-raises the SIGTERM it shut down on, so serve's own clean-up does not always run; the kernel's
    parent-death signal (Linux) still stops the worker, which then hands a running job back to the queue.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default BINWATCH_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default BINWATCH_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default BINWATCH_WORKERS).")] = None,
    with_worker: Annotated[
        bool,
        typer.Option(
            "--with-worker",
            help="Also run one training worker (`binwatch worker`) as a child process, stopped with the "
            "server: the whole service in one command (what `make run` does).",
        ),
    ] = False,
) -> None:
    """Run the HTTP API (uvicorn).

    Without BINWATCH_DATABASE_URL / BINWATCH_ARTIFACT_STORE everything lives under BINWATCH_HOME (./var):
    a SQLite file and an artifact folder, no other server needed. The database is migrated on start; on
    the first start of an embedded database an admin API key is created and printed once. The active
    model version (if any) is loaded in the background; /readyz says when it is ready.

    Example: binwatch serve --port 8000
    """
    import uvicorn

    from api.app import prepare_database

    settings = _settings()
    host = host or settings.host
    port = port if port is not None else settings.port
    workers = workers if workers is not None else settings.workers
    url = settings.resolved_database_url
    try:
        # Once, here, before any worker process exists: workers then find the schema and the key in place.
        prepare_database(settings.model_copy(update={"host": host, "port": port}))
    except sa.exc.OperationalError as exc:
        raise fail(f"database {safe_url(url)} is unreachable: {exc.orig or exc}") from exc
    err.print(
        f"binwatch API on http://{host}:{port} ({workers} worker{'s' if workers != 1 else ''}); "
        f"database {safe_url(url)}; artifacts {settings.resolved_artifact_store}; docs at /docs",
        soft_wrap=True,
    )
    training_worker = None
    if with_worker:
        # A separate process, as on a GPU host: training never runs inside the API's event loop.
        training_worker = subprocess.Popen(
            [sys.executable, "-m", "binwatch", "worker"], preexec_fn=_die_with_parent
        )
        broker = sa.engine.make_url(settings.resolved_broker_url).render_as_string(hide_password=True)
        err.print(f"training worker started (pid {training_worker.pid}); broker {broker}", soft_wrap=True)
    try:
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=30,
        )
    finally:
        if training_worker is not None:
            # SIGTERM: the worker hands a running job back to the queue, to be resumed on the next start.
            training_worker.terminate()
            try:
                training_worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                training_worker.kill()


# -- apikeys -----------------------------------------------------------------------------------------


@apikeys_app.command("create")
def apikeys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key (shown in listings and promotions).")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help=f"Repeatable: {', '.join(SCOPES)}. admin implies all.")
    ],
) -> None:
    """Create an API key and print it (stdout, once; only its hash is stored).

    Example: binwatch apikeys create --name scanner-3 --scope predict --scope inventory
    """
    settings = _settings()
    with _Db(settings) as factory, session_scope(factory) as session:
        try:
            created = key_records.create_api_key(session, name, scope)
        except ValueError as exc:
            raise fail(str(exc)) from exc
        key_id, scopes = created.record.id, created.record.scopes
    err.print(f"created API key {key_id} ({name}, scopes: {', '.join(scopes)}); it is not shown again:")
    typer.echo(created.secret)


@apikeys_app.command("list")
def apikeys_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line instead of a table.")
    ] = False,
) -> None:
    """List API keys (id, prefix, scopes; never the keys themselves)."""
    settings = _settings()
    table = Table(title="API keys")
    for col in ("id", "name", "prefix", "scopes", "created", "last used", "revoked"):
        table.add_column(col)
    with _Db(settings) as factory, session_scope(factory) as session:
        for key in key_records.list_api_keys(session, include_revoked=all_):
            if as_json:
                typer.echo(
                    json.dumps(
                        {
                            "id": key.id,
                            "name": key.name,
                            "prefix": key.prefix,
                            "scopes": key.scopes,
                            "created_at": key.created_at.isoformat(),
                            "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
                            "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
                        }
                    )
                )
                continue
            table.add_row(
                str(key.id),
                key.name,
                key.prefix + "…",
                ", ".join(key.scopes),
                f"{key.created_at:%Y-%m-%d %H:%M}",
                f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "-",
                f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "-",
            )
    if not as_json:
        console.print(table)


@apikeys_app.command("revoke")
def apikeys_revoke(
    key: Annotated[
        str, typer.Argument(help="The key's id or prefix (bw_XXXXXXXX), as `apikeys list` shows.")
    ],
) -> None:
    """Revoke an API key; requests with it get 401 from then on."""
    settings = _settings()
    with _Db(settings) as factory, session_scope(factory) as session:
        try:
            record = key_records.revoke_api_key(session, key.rstrip("…"))
        except key_records.ApiKeyNotFound as exc:
            raise fail(str(exc)) from exc
        console.print(f"revoked API key {record.id} ({record.name}, {record.prefix}…)")


# -- models ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredModel:
    id: int
    name: str
    sha256: str
    artifact_uri: str
    created: bool
    promoted: bool


def register_model(
    settings: Settings,
    checkpoint: Path,
    *,
    name: str | None = None,
    promote: bool = False,
    reason: str | None = None,
    actor: str | None = None,
) -> RegisteredModel:
    """Verify a checkpoint loads, upload it to the artifact store, record its version (and promote it).

    Raises CheckpointError for a checkpoint that does not load or verify.
    """
    from model.checkpoint import load_model
    from records.artifacts import open_artifact_store

    loaded = load_model(checkpoint)  # checks the sidecar's sha256 and that the weights fit
    store = open_artifact_store(
        settings.resolved_artifact_store, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    plots = {key: checkpoint.parent / file for key, file in PLOT_FILES.items()}
    name = name or _default_name(checkpoint, loaded.metadata)
    with _Db(settings) as factory, session_scope(factory) as session:
        version, created = model_versions.register_checkpoint(
            session,
            store,
            checkpoint,
            loaded.metadata,
            name=name,
            source="cli",
            plots=plots,
            expected_sha256=loaded.sha256,
        )
        promoted = False
        if promote:
            _, promoted = model_versions.promote(
                session,
                version.id,
                actor=actor or f"cli:{getpass.getuser()}",
                reason=reason or f"binwatch models register {checkpoint} --promote",
            )
        return RegisteredModel(
            version.id, version.name, version.sha256, store.uri(version.artifact_key), created, promoted
        )


def _default_name(checkpoint: Path, metadata: dict) -> str:
    folder = checkpoint.resolve().parent.name
    recipe = (metadata.get("train_config") or {}).get("recipe")
    return folder if folder and folder not in (".", "/") else f"{recipe or metadata.get('architecture')}"


@models_app.command("register")
def models_register(
    checkpoint: Annotated[
        Path, typer.Argument(help="A best.pt written by binwatch train (json sidecar beside).")
    ],
    name: Annotated[str | None, typer.Option(help="Version name (default: the checkpoint's folder).")] = None,
    promote: Annotated[
        bool, typer.Option("--promote", help="Make it the active version right away.")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why it is promoted (kept in the history).")] = None,
) -> None:
    """Upload a checkpoint trained anywhere as a new model version (and optionally promote it).

    The checkpoint is verified (sha256 sidecar, weights fit the architecture) before anything is stored.
    Registering the same file twice finds the existing version. Running API processes switch to a
    promoted version within BINWATCH_MODEL_POLL_SECONDS.

    Example: binwatch models register runs/latest/best.pt --promote
    """
    from model.checkpoint import CheckpointError

    if not checkpoint.is_file():
        raise fail(
            f"{checkpoint} does not exist; train one with `binwatch train ../shared/abid --recipe cpu-quick`"
        )
    try:
        result = register_model(_settings(), checkpoint, name=name, promote=promote, reason=reason)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    verb = "registered" if result.created else "already registered as"
    console.print(
        f"{verb} model version {result.id} ({result.name}, sha256 {result.sha256[:12]}…) at "
        f"{result.artifact_uri}"
    )
    if promote:
        console.print(
            f"model version {result.id} is {'now' if result.promoted else 'already'} active; running API "
            "processes switch to it at their next poll"
        )
    typer.echo(result.id)


@models_app.command("list")
def models_list(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line instead of a table.")
    ] = False,
) -> None:
    """List model versions, newest first."""
    settings = _settings()
    table = Table(title="model versions")
    for col in ("id", "name", "arch", "classes", "accuracy", "rmse", "active", "created", "sha256"):
        table.add_column(col)
    with _Db(settings) as factory, session_scope(factory) as session:
        for v in model_versions.list_versions(session, limit=1000).items:
            m = v.metrics or {}
            if as_json:
                typer.echo(
                    json.dumps(
                        {
                            "id": v.id,
                            "name": v.name,
                            "architecture": v.architecture,
                            "classes": v.classes,
                            "accuracy": m.get("accuracy"),
                            "rmse": m.get("rmse"),
                            "is_active": v.is_active,
                            "created_at": v.created_at.isoformat(),
                            "sha256": v.sha256,
                            "artifact_key": v.artifact_key,
                        }
                    )
                )
                continue
            table.add_row(
                str(v.id),
                v.name,
                v.architecture,
                " ".join(v.classes),
                f"{m['accuracy']:.1%}" if isinstance(m.get("accuracy"), float) else "-",
                f"{m['rmse']:.3f}" if isinstance(m.get("rmse"), float) else "-",
                "yes" if v.is_active else "",
                f"{v.created_at:%Y-%m-%d %H:%M}",
                v.sha256[:12],
            )
    if not as_json:
        console.print(table)


@models_app.command("promote")
def models_promote(
    version_id: Annotated[int, typer.Argument(help="The model version id (`binwatch models list`).")],
    reason: Annotated[
        str, typer.Option(help="Why (kept in the promotion history).")
    ] = "promoted from the CLI",
) -> None:
    """Make a registered model version the active one (after checking its checkpoint loads)."""
    import tempfile

    from model.checkpoint import CheckpointError, load_model
    from records.artifacts import ArtifactNotFound, open_artifact_store

    settings = _settings()
    store = open_artifact_store(
        settings.resolved_artifact_store, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    with _Db(settings) as factory:
        with session_scope(factory) as session:
            try:
                version = model_versions.get_version(session, version_id)
            except model_versions.ModelVersionNotFound as exc:
                raise fail(str(exc)) from exc
            key, sha = version.artifact_key, version.sha256
        with tempfile.TemporaryDirectory() as tmp:
            try:
                load_model(store.download(key, Path(tmp) / "model.pt"), expected_sha256=sha)
            except (ArtifactNotFound, CheckpointError) as exc:
                raise fail(f"model version {version_id} cannot be loaded, not promoting it: {exc}") from exc
        with session_scope(factory) as session:
            _, changed = model_versions.promote(
                session, version_id, actor=f"cli:{getpass.getuser()}", reason=reason
            )
    console.print(f"model version {version_id} is {'now' if changed else 'already'} active")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.add_typer(apikeys_app, name="apikeys")
    app.add_typer(models_app, name="models")
