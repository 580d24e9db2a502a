"""worker/epoch_store.py ``_restore_checkpoints``: a resume on a host with an empty disk rebuilds its work
folder from what the database points at. Real Postgres and a real artifact store; the checkpoint files are
stand-in bytes, since only which file comes from which epoch is under test (training them: test_runner.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from records import jobs
from records.artifacts import open_artifact_store
from records.migrate import upgrade_database
from tests.worker.support import Jobs
from tests.worker.test_runner import make_settings
from worker.runner import JobRun, Resources


@pytest.fixture
def env(pg_url: str, tmp_path: Path) -> Iterator[tuple[Jobs, Resources]]:
    upgrade_database(pg_url)
    settings = make_settings(pg_url, tmp_path)
    helper = Jobs(settings)
    yield helper, Resources(settings, helper.sessions, open_artifact_store(settings.resolved_artifact_store))
    helper.close()


def store_epochs(helper: Jobs, res: Resources, job_id: str, best: dict[int, bool]) -> None:
    """Epoch rows as a worker records them, and the files the runner keeps for them."""
    with helper.sessions() as s:
        assert jobs.claim_job(s, job_id, "gpu-1", 60).outcome == jobs.ClaimOutcome.CLAIMED
        for epoch, is_best in best.items():
            assert jobs.record_epoch(
                s,
                job_id,
                "gpu-1",
                epoch=epoch,
                train_loss=1.0,
                val_loss=1.0,
                val_accuracy=0.5,
                val_rmse=1.0,
                duration_s=1.0,
                metrics={"is_best": is_best},
            )
    for epoch, is_best in best.items():
        prefix = f"jobs/{job_id}/epochs/{epoch:04d}"
        kinds = ("best", "last") if is_best else ("last",)
        for kind in kinds:
            res.artifacts.put_bytes(f"{prefix}/{kind}.pt", f"{kind} of epoch {epoch}".encode())
            res.artifacts.put_bytes(f"{prefix}/{kind}.json", b"{}")


def test_a_best_epoch_older_than_the_last_is_restored_beside_it(env: tuple[Jobs, Resources]) -> None:
    helper, res = env
    job_id = helper.submit(enqueue=False, epochs=4)
    store_epochs(helper, res, job_id, {1: True, 2: False, 3: False})
    run = JobRun(job_id, res)
    assert run._restore_checkpoints(helper.get(job_id)) == 3  # noqa: SLF001 - the unit under test
    assert run.best_epoch == 1
    assert (run.work_dir / "last.pt").read_bytes() == b"last of epoch 3"
    assert (run.work_dir / "best.pt").read_bytes() == b"best of epoch 1"


def test_the_newest_best_epoch_wins_when_several_were_best(env: tuple[Jobs, Resources]) -> None:
    helper, res = env
    job_id = helper.submit(enqueue=False, epochs=4)
    store_epochs(helper, res, job_id, {1: True, 2: True, 3: False})
    run = JobRun(job_id, res)
    assert run._restore_checkpoints(helper.get(job_id)) == 3  # noqa: SLF001
    assert run.best_epoch == 2 and (run.work_dir / "best.pt").read_bytes() == b"best of epoch 2"


def test_a_missing_best_file_means_starting_over_not_a_wrong_best(env: tuple[Jobs, Resources]) -> None:
    helper, res = env
    job_id = helper.submit(enqueue=False, epochs=4)
    store_epochs(helper, res, job_id, {1: True, 2: False})
    res.artifacts.delete(f"jobs/{job_id}/epochs/0001/best.pt")
    run = JobRun(job_id, res)
    assert run._restore_checkpoints(helper.get(job_id)) == 0  # noqa: SLF001
    assert run.best_epoch is None and list(run.work_dir.iterdir()) == []
