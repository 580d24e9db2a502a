"""`binwatch models register|install-default|bundle|list|promote`: the model registry from the shell."""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from binwatch.cli.database import Database, console, err, fail, load_settings
from records import model_versions
from records.db import session_scope
from settings import Settings

models_app = typer.Typer(no_args_is_help=True, help="Register checkpoints as model versions and promote one.")

PLOT_FILES = {"confusion_matrix": "confusion_matrix.png", "training_curves": "training_curves.png"}


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
    with Database(settings) as factory, session_scope(factory) as session:
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


def install_bundled_model(
    settings: Settings, *, promote: bool, reason: str | None = None, actor: str | None = None
) -> RegisteredModel:
    """Register the counter that ships with binwatch (model/bundle.py); idempotent (same sha256)."""
    import tempfile

    from model.bundle import BUNDLED_NAME, materialise

    with tempfile.TemporaryDirectory(prefix="binwatch-bundled-") as tmp:
        checkpoint = materialise(tmp)
        return register_model(
            settings, checkpoint, name=BUNDLED_NAME, promote=promote, reason=reason, actor=actor
        )


def report_registration(result: RegisteredModel, promote: bool) -> None:
    """What register and install-default print: the version, whether it is active, and its id (last line)."""
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
        result = register_model(load_settings(), checkpoint, name=name, promote=promote, reason=reason)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    report_registration(result, promote)


@models_app.command("install-default")
def models_install_default(
    promote: Annotated[
        bool, typer.Option("--promote/--no-promote", help="Make it the active version (default: yes).")
    ] = True,
) -> None:
    """Register the default counter that ships with binwatch as a model version (and promote it).

    `binwatch serve` does this by itself on the embedded default when the registry is empty; on a production
    database run it once. Running it again finds the existing version. What the model is and how well it
    counts: docs/model-card.md.

    Example: BINWATCH_DATABASE_URL=postgresql+psycopg://… binwatch models install-default
    """
    from model.bundle import BundledModelError

    try:
        result = install_bundled_model(
            load_settings(), promote=promote, reason="binwatch models install-default" if promote else None
        )
    except (BundledModelError, ValueError) as exc:
        raise fail(str(exc)) from exc
    report_registration(result, promote)


@models_app.command("bundle")
def models_bundle(
    checkpoint: Annotated[Path, typer.Argument(help="The best.pt to ship as the default model.")],
    dest: Annotated[
        Path | None, typer.Option(help="Where to write it (default: model/bundled/counter.pt).")
    ] = None,
) -> None:
    """Write a checkpoint as the compact (fp16) bundled default model and print the sha256 to pin.

    For maintainers: the printed sha256 goes into model/bundle.py (BUNDLED_SHA256), and
    docs/model-card.md gets the new figures.

    Example: binwatch models bundle runs/lite0/best.pt
    """
    from model.bundle import BUNDLED_CHECKPOINT, export
    from model.checkpoint import CheckpointError

    target = dest or BUNDLED_CHECKPOINT
    try:
        digest = export(checkpoint, target)
    except CheckpointError as exc:
        raise fail(str(exc)) from exc
    console.print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB); pin it in model/bundle.py:")
    typer.echo(f'BUNDLED_SHA256 = "{digest}"')


@models_app.command("list")
def models_list(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line instead of a table.")
    ] = False,
) -> None:
    """List model versions, newest first."""
    settings = load_settings()
    table = Table(title="model versions")
    for col in ("id", "name", "arch", "classes", "accuracy", "rmse", "active", "created", "sha256"):
        table.add_column(col)
    with Database(settings) as factory, session_scope(factory) as session:
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

    settings = load_settings()
    store = open_artifact_store(
        settings.resolved_artifact_store, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    with Database(settings) as factory:
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


def install_bundled_if_empty(settings: Settings) -> None:
    """First start with an empty registry: serve the bundled counter, so a fresh install counts at once."""
    from model.bundle import BundledModelError

    with Database(settings) as factory, session_scope(factory) as session:
        if model_versions.list_versions(session, limit=1).items:
            return
    try:
        result = install_bundled_model(
            settings, promote=True, reason="first start: the bundled default model"
        )
    except BundledModelError as exc:
        err.print(f"[bold yellow]warning:[/] not installing the bundled model: {exc}")
        return
    err.print(
        f"the registry was empty: registered and promoted the bundled model as version {result.id} "
        f"({result.name}; docs/model-card.md)",
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
