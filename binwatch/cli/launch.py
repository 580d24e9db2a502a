"""`binwatch train --nproc-per-node N [--nnodes M --node-rank R --rdzv-endpoint HOST:PORT]`: the same training
run in N processes per host, launched by torch's own launcher (``torch.distributed.run``, i.e. torchrun)
with the options torchrun users know. The rules a distributed run follows (effective batch, sampling,
who writes, resume) are in model/distributed.py; docs/training.md has figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

NprocPerNode = Annotated[
    int | None,
    typer.Option(
        "--nproc-per-node",
        min=1,
        help="Train with this many processes on this host (torchrun; gloo on CPU, one per GPU with NCCL).",
    ),
]
Nnodes = Annotated[
    str, typer.Option("--nnodes", help="Hosts in the run: N, or MIN:MAX for an elastic run (torchrun's).")
]
NodeRank = Annotated[
    int | None, typer.Option("--node-rank", min=0, help="This host's rank (static rendezvous).")
]
RdzvEndpoint = Annotated[
    str | None,
    typer.Option(
        "--rdzv-endpoint", help="HOST:PORT every host can reach, for the c10d rendezvous (several hosts)."
    ),
]
RdzvId = Annotated[str, typer.Option("--rdzv-id", help="The run's id, the same on every host.")]
MaxRestarts = Annotated[
    int,
    typer.Option(
        "--max-restarts",
        min=0,
        help="Restart the group this many times when a process dies; each restart resumes from OUT/last.pt.",
    ),
]

# The launcher's own options, removed from the arguments each training process gets.
LAUNCH_OPTIONS = {
    "--nproc-per-node",
    "--nnodes",
    "--node-rank",
    "--rdzv-endpoint",
    "--rdzv-id",
    "--max-restarts",
}


def training_args(argv: list[str], out: Path) -> list[str]:
    """``argv`` (after ``train``) without the launcher's options, with ``--out`` fixed: every process, and
    every restart, must write to the same folder (the default one is named after the current time)."""
    args: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in LAUNCH_OPTIONS or name == "--out":
            skip = "=" not in arg and i + 1 < len(argv)
            continue
        args.append(arg)
    return [*args, "--out", str(out)]


def launch(
    argv: list[str],
    out: Path,
    nproc_per_node: int,
    nnodes: str,
    node_rank: int | None,
    rdzv_endpoint: str | None,
    rdzv_id: str,
    max_restarts: int,
) -> int:
    """Run ``binwatch train`` under torchrun; returns its exit status."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes in ("1", "1:1") and rdzv_endpoint is None:
        cmd += ["--standalone", "--nnodes=1"]
    else:
        if rdzv_endpoint is None:
            raise typer.BadParameter(
                "--nnodes above 1 needs --rdzv-endpoint HOST:PORT", param_hint="--rdzv-endpoint"
            )
        cmd += [
            f"--nnodes={nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rdzv_endpoint}",
            f"--rdzv-id={rdzv_id}",
        ]
        if node_rank is not None:
            cmd.append(f"--node-rank={node_rank}")
    cmd += [f"--max-restarts={max_restarts}", "-m", "binwatch", "train", *training_args(argv, out)]
    return subprocess.call(cmd)
