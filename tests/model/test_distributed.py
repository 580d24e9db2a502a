"""`binwatch train --nproc-per-node 2`: DDP through torchrun with gloo on this CPU, on real ABID photos.

Seeds: the run's seed is 0 for data sampling, splitting, weights and batches in every run here. A DDP run
does not draw the same batches as a single process (each process samples its share with its own
augmentation stream; BatchNorm sees per-process batches), so its figures are compared within a tolerance:
0.15 of val accuracy on 91 val bins (about two standard errors of a difference of two such accuracies).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from model.checkpoint import read_sidecar
from model.evaluation import evaluate_checkpoint
from tests.api.support import BINWATCH
from tests.conftest import ABID, REPO

pytestmark = pytest.mark.slow

ARGS = ["--recipe", "smoke", "--image-size", "64", "--limit", "600", "--epochs", "3", "--batch-size", "32"]


def train(out: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [str(BINWATCH), "train", str(ABID), *ARGS, "--out", str(out), *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def val_accuracy(out: Path) -> float:
    meta = read_sidecar(out / "best.pt")
    assert meta is not None
    return float(meta["metrics"]["accuracy"])


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    done = train(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_two_processes_train_one_model_with_the_single_process_figures(single: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    done = train(out, "--nproc-per-node", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # The rule is stated once, by rank 0 only; rank 1 prints nothing of its own.
    assert done.stdout.count("effective batch 32 = 2 x 16 per process") == 1, done.stdout
    assert done.stdout.count("best checkpoint:") == 1
    meta = read_sidecar(out / "best.pt")
    assert meta is not None and len(meta["history"]) == 3
    # Rank 0 evaluated on the whole val split in one process: the stored figures are exactly what a
    # single-process evaluation of the same checkpoint gives.
    from model.abid import load_records, open_source
    from model.subsets import SubsetSpec, select, split_records

    source = open_source(str(ABID))
    records = select(load_records(source), SubsetSpec(None, None, None, None, None, 600, 0))
    _train, val = split_records(records, 0.15, 0)
    again = evaluate_checkpoint(out / "best.pt", source, val, device="cpu", workers=0, progress=False)
    assert again.evaluation.accuracy == pytest.approx(meta["metrics"]["accuracy"], abs=1e-9)
    assert again.evaluation.n == meta["metrics"]["n"] == len(val)
    # Within noise of the single-process run of the same recipe and seed (see the module doc).
    assert abs(val_accuracy(out) - val_accuracy(single)) <= 0.15, (val_accuracy(out), val_accuracy(single))
    # Both runs learned: better than the share of the most common class would be by chance alone.
    assert meta["history"][-1]["train_loss"] < meta["history"][0]["train_loss"]


def test_a_batch_size_that_does_not_split_is_refused_with_what_to_use(tmp_path: Path) -> None:
    done = train(tmp_path / "odd", "--nproc-per-node", "2", "--batch-size", "33", timeout=300)
    assert done.returncode != 0
    assert "batch_size 33 is the effective batch over 2 processes" in done.stdout + done.stderr


def _rank_pids(rank: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"train" in cmd
            and f"RANK={rank}".encode() in environ
            and b"TORCHELASTIC_RUN_ID=" in b" ".join(environ)
        ):
            pids.append(int(proc.name))
    return pids


def test_a_killed_rank_fails_the_run_and_the_same_command_resumes_after_the_last_epoch(
    tmp_path: Path,
) -> None:
    out = tmp_path / "resumed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = tmp_path / "train.log"
    with log.open("w") as sink:  # a file, not a pipe: progress bars would fill a pipe and block the ranks
        proc = subprocess.Popen(
            [str(BINWATCH), "train", str(ABID), *ARGS, "--out", str(out), "--nproc-per-node", "2"],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while not (out / "last.json").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "no epoch finished"
            time.sleep(0.1)
        first = json.loads((out / "last.json").read_text())
        assert first["epoch"] == 1
        victims = _rank_pids("1")
        assert victims, "rank 1 not found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=300) != 0  # torchrun stops the group and reports the dead rank
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _rank_pids("0") + _rank_pids("1"):
            os.kill(pid, signal.SIGKILL)
    output = log.read_text(errors="replace")
    assert "failed (exitcode: -9) local_rank: 1" in output, output[-4000:]
    again = train(out, "--nproc-per-node", "2")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    meta = read_sidecar(out / "last.pt")
    assert meta is not None and meta["epoch"] == 3 and len(meta["history"]) == 3
    # Epoch 1 was not trained again: its row is the one written before the kill.
    assert meta["history"][0] == first["history"][0]
    assert torch.load(out / "last.pt", map_location="cpu", weights_only=False)["metadata"]["epoch"] == 3
