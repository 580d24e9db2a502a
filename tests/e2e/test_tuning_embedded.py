"""A tuning job on the embedded default (`make run`: SQLite file, kombu's SQLAlchemy broker, local artifacts;
no server of any kind), driven with the `binwatch tuning` commands against a real API and worker."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from records import apikeys
from records.migrate import upgrade_database
from tests.api.support import BINWATCH, start_server
from tests.conftest import ABID, REPO
from tests.worker.support import Jobs, settings_from_env, start_worker, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def run(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BINWATCH), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_a_study_on_the_embedded_default_with_the_tuning_commands(tmp_path: Path) -> None:
    env = worker_env(database_url=None, broker_url=None, home=tmp_path / "var")
    settings = settings_from_env(env)
    assert settings.resolved_broker_url.startswith("sqla+sqlite:///")
    upgrade_database(settings.resolved_database_url)
    helper = Jobs(settings)
    with helper.sessions() as session:
        key = apikeys.create_api_key(session, "tuning", ["predict", "train"]).secret
        session.commit()
    helper.close()
    api = start_server(env, tmp_path / "logs")
    worker = start_worker(env, tmp_path / "logs")
    try:
        worker.wait_ready()
        cli = dict(env, BINWATCH_API_URL=api.url, BINWATCH_API_KEY=key)
        submitted = run(
            [
                "tuning",
                "submit",
                str(ABID),
                "--recipe",
                "smoke",
                "--image-size",
                "64",
                "--epochs",
                "2",
                "--limit",
                "120",
                "--space",
                "lr=0.001..0.004:log",
                "--trials",
                "3",
                "--parallelism",
                "1",
                "--policy",
                "always",
                "--name",
                "embedded-study",
                "--watch",
            ],
            cli,
        )
        out = submitted.stdout
        assert submitted.returncode == 0, f"{out}\n{submitted.stderr}\n{worker.log()[-4000:]}"
        assert "queued tuning job" in out and "trial 0 complete" in out and "succeeded" in out
        tuning_id = out.split("queued tuning job ", 1)[1].split()[0]
        shown = json.loads(run(["tuning", "show", tuning_id, "--json"], cli).stdout)
        assert shown["status"] == "succeeded" and shown["counts"] == {"complete": 3}
        assert shown["trial_list"][0]["baseline"] and shown["model_version_id"] is not None
        listed = run(["tuning", "list"], cli)
        assert listed.returncode == 0 and tuning_id[:8] in listed.stdout
        models = run(["models", "list", "--json"], cli)
        assert any(
            m["id"] == shown["model_version_id"] and m["name"] == "embedded-study" and m["is_active"]
            for m in map(json.loads, models.stdout.splitlines())
        ), models.stdout
        # The study lives in its own SQLite file beside binwatch's (Optuna has its own alembic_version).
        assert (tmp_path / "var" / "binwatch-optuna.db").is_file()
        bad = run(["tuning", "submit", str(ABID), "--space", "lr=0.1..0.01"], cli)
        assert bad.returncode == 2 and "lr" in bad.stderr
    finally:
        worker.stop(timeout=15)
        api.stop()
