"""`binwatch apikeys create|list|revoke` and `binwatch models register|list|promote` (in-process CLI runs
against a fresh embedded database)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from binwatch.cli import app
from records import apikeys, registry
from records.db import make_engine, make_session_factory, session_scope
from settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(__import__("os").environ):
        if name.startswith("BINWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BINWATCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # no stray .env file
    return tmp_path / "home"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def sessions(home: Path):  # noqa: ANN201
    engine = make_engine(Settings(_env_file=None, home=home).resolved_database_url)  # type: ignore[call-arg]
    return engine, make_session_factory(engine)


def test_apikeys_create_list_revoke(home: Path) -> None:
    code, out, err = invoke(
        "apikeys", "create", "--name", "scanner", "--scope", "predict", "--scope", "inventory"
    )
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("bw_") and len(secret) == 35
    assert "not shown again" in err

    code, out, _ = invoke("apikeys", "list")
    assert code == 0 and "API keys" in out and secret not in out, "listings never show the key"
    code, out, _ = invoke("apikeys", "list", "--json")
    (listed,) = [json.loads(line) for line in out.splitlines()]
    assert listed["name"] == "scanner" and listed["prefix"] == secret[:11]
    assert listed["scopes"] == ["predict", "inventory"] and listed["revoked_at"] is None
    assert secret not in out

    engine, factory = sessions(home)
    with session_scope(factory) as session:
        assert apikeys.authenticate(session, secret) is not None
    code, out, _ = invoke("apikeys", "revoke", secret[:11])
    assert code == 0 and "revoked API key" in out
    with session_scope(factory) as session:
        assert apikeys.authenticate(session, secret) is None
    engine.dispose()
    assert invoke("apikeys", "list", "--json")[1] == ""
    assert json.loads(invoke("apikeys", "list", "--all", "--json")[1])["revoked_at"]

    code, _, err = invoke("apikeys", "revoke", "bw_missing")
    assert code == 2 and "no API key with prefix" in err
    code, _, err = invoke("apikeys", "create", "--name", "x", "--scope", "root")
    assert code == 2 and "unknown scope(s) root" in err


def test_models_register_list_promote(home: Path, checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    code, out, err = invoke("models", "register", str(checkpoints[0]), "--promote", "--reason", "first")
    assert code == 0, err
    assert "registered model version 1 (tiny-seed1" in out and "is now active" in out
    code, out, err = invoke("models", "register", str(checkpoints[1]), "--name", "seed-two")
    assert code == 0 and "registered model version 2 (seed-two" in out
    code, out, _ = invoke("models", "register", str(checkpoints[1]))
    assert code == 0 and "already registered as model version 2" in out

    code, out, _ = invoke("models", "list")
    assert code == 0 and "model versions" in out
    code, out, _ = invoke("models", "list", "--json")
    listed = [json.loads(line) for line in out.splitlines()]
    assert [(m["id"], m["name"], m["is_active"]) for m in listed] == [
        (2, "seed-two", False),
        (1, "tiny-seed1", True),
    ]

    code, out, err = invoke("models", "promote", "2", "--reason", "second is better")
    assert code == 0 and "model version 2 is now active" in out, err
    engine, factory = sessions(home)
    with session_scope(factory) as session:
        active = registry.active_version(session)
        assert active is not None and active.id == 2
        assert [p.reason for p in active.promotions] == ["second is better"]
        assert active.promotions[0].actor.startswith("cli:")
    engine.dispose()

    code, _, err = invoke("models", "promote", "99")
    assert code == 2 and "no model version with id 99" in err

    # a tampered checkpoint is refused before anything is stored
    bad = tmp_path / "bad" / "best.pt"
    bad.parent.mkdir()
    data = bytearray(checkpoints[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    bad.with_suffix(".json").write_text(checkpoints[0].with_suffix(".json").read_text())
    code, _, err = invoke("models", "register", str(bad))
    assert code == 2 and "modified or corrupted" in err
    code, _, err = invoke("models", "register", str(tmp_path / "nope.pt"))
    assert code == 2 and "does not exist" in err
    assert json.loads(checkpoints[0].with_suffix(".json").read_text())["sha256"]


def test_models_install_default_on_postgres(
    home: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, abid_root: Path
) -> None:
    """The one documented command that gives a production (Postgres) deployment the bundled model."""
    from model.bundle import BUNDLED_NAME
    from model.predictor import Predictor
    from records.artifacts import open_artifact_store

    monkeypatch.setenv("BINWATCH_DATABASE_URL", pg_url)
    code, out, err = invoke("models", "install-default")
    assert code == 0, err
    version_id = int(out.strip().splitlines()[-1])
    assert "is now active" in out
    engine = make_engine(pg_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            active = registry.active_version(session)
            assert active is not None and active.id == version_id and active.name == BUNDLED_NAME
            key, sha = active.artifact_key, active.sha256
            assert active.architecture == "efficientnet-lite0"
    finally:
        engine.dispose()
    # The stored artifact is a verified checkpoint that counts.
    store = open_artifact_store(str(home / "artifacts"))
    local = store.download(key, home / "check" / "model.pt")
    photo = sorted((abid_root / "originals").glob("*.jpg"))[0]
    (pred,) = Predictor(local, expected_sha256=sha).predict([photo])
    assert pred.label
    # Idempotent: a second run finds the same version.
    code, out, err = invoke("models", "install-default")
    assert code == 0, err
    assert "already registered as model version" in out and int(out.strip().splitlines()[-1]) == version_id
