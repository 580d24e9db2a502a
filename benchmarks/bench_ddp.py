"""Training throughput in 1 and N processes (DDP through torchrun) on this host, side by side, repeated.

Every configuration trains the same model on the same bins (model.training.train, the code path of
`binwatch train --nproc-per-node N`) for ``--epochs`` epochs, ``--repeat`` rounds, alternating, so the
shared machine's noise falls on all of them alike. The figure is training samples per second over the
epochs after the first (warm-up: caches, allocator, cuDNN autotuning), validation excluded; the table gives
min / median / max, the speed-up of each against one plain process, and the scaling efficiency
(speed-up / processes). The effective batch is the same in every configuration (model/distributed.py).

Configurations: ``plain`` (one process, no process group), ``ddp-N`` for each N in ``--procs`` (torchrun,
gloo on the CPU, NCCL on a GPU; one GPU per process, so on a one-GPU host only ddp-1 runs there), and
``group-N`` for each N in ``--groups``: the path of a multi-node training *job* (worker/groups.py): rank 0
starts the group's store itself (model/distributed.py ``start_store``), spawns the other ranks, and all
join with ``form``, without torchrun.

Run: .venv/bin/python benchmarks/bench_ddp.py ../shared/abid --limit 1200 --procs 1,2 --repeat 3
It imports only the ML core (model/), so it also runs where the service's packages are not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _group_rank(args: argparse.Namespace, port: int, world: int, rank: int) -> None:
    """A rank other than 0 of a group-N run (spawned by rank 0, as a worker spawns a node's processes)."""
    from model.distributed import form
    from model.training import resolve_device

    device = resolve_device(args.device)
    device = resolve_device(f"cuda:{rank}") if device.type == "cuda" else device
    args.device = str(device)
    group = form(
        address="127.0.0.1",
        port=port,
        world_size=world,
        rank=rank,
        local_rank=rank,
        device=device,
        timeout_s=600,
    )
    worker(args, group)


def worker(args: argparse.Namespace, group: object = None) -> None:
    """One training run (inside torchrun, plain, or a group-N rank); rank 0 prints one JSON line."""
    import torch

    from model.abid import load_records, open_source
    from model.distributed import form, leave, start_store
    from model.recipes import recipe_config
    from model.subsets import SubsetSpec, select, split_records
    from model.training import TrainHooks, resolve_device, train

    torch.set_num_threads(args.threads)
    children = []
    if args.group_size and group is None:
        import multiprocessing

        if resolve_device(args.device).type == "cuda":
            args.device = "cuda:0"  # rank 0's own GPU, as the worker gives it (worker/groups.py rank_device)
        store = start_store("127.0.0.1", 600)
        ctx = multiprocessing.get_context("spawn")
        for rank in range(1, args.group_size):
            child = ctx.Process(target=_group_rank, args=(args, store.port, args.group_size, rank))
            child.start()
            children.append(child)
        group = form(
            address="127.0.0.1",
            port=store.port,
            world_size=args.group_size,
            rank=0,
            local_rank=0,
            device=resolve_device(args.device),
            timeout_s=600,
            store=store,
        )
    is_main = getattr(group, "rank", int(os.environ.get("RANK", "0"))) == 0
    source = open_source(args.data)
    records = select(load_records(source), SubsetSpec(None, None, None, None, None, args.limit, 0))
    train_recs, val_recs = split_records(records, 0.1, 0)
    val_recs = val_recs[: args.val]  # validation is not what is measured; keep it short
    cfg = recipe_config(
        args.recipe,
        epochs=args.epochs,
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=0,
        calibrate=False,
        amp=args.amp,
    )
    durations: list[float] = []
    hooks = TrainHooks(on_epoch_end=lambda ep: durations.append(ep.duration_s))
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        result = train(
            cfg, source, train_recs, val_recs, Path(out), hooks, resume=False, progress=False, group=group
        )
        wall = time.monotonic() - started
    if is_main:
        steady = durations[1:] or durations
        print(
            "RESULT "
            + json.dumps(
                {
                    "samples_per_s": len(train_recs) * len(steady) / sum(steady),
                    "epoch_s": steady,
                    "wall_s": wall,
                    "train_bins": len(train_recs),
                    "accuracy": result.evaluation.accuracy,
                    "device": str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu",
                }
            ),
            flush=True,
        )
    leave()
    for child in children:
        child.join(60)


def run_one(args: argparse.Namespace, name: str) -> dict:
    base = [
        __file__,
        "--worker",
        args.data,
        "--limit",
        str(args.limit),
        "--epochs",
        str(args.epochs),
        "--image-size",
        str(args.image_size),
        "--batch-size",
        str(args.batch_size),
        "--recipe",
        args.recipe,
        "--device",
        args.device,
        "--val",
        str(args.val),
        "--threads",
        str(args.threads),
    ] + (["--amp"] if args.amp else [])
    if name == "plain":
        cmd = [sys.executable, *base]
    elif name.startswith("group-"):
        cmd = [sys.executable, *base, "--group-size", name.split("-")[1]]
    else:
        n = int(name.split("-")[1])
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", *base]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=3600)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{name} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=1200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument(
        "--batch-size", type=int, default=32, help="effective batch (split between processes)"
    )
    parser.add_argument("--recipe", default="cpu-quick")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--val", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--procs", default="1,2", help="process counts for the ddp-N configurations")
    parser.add_argument("--groups", default="", help="process counts for the group-N configurations")
    parser.add_argument("--group-size", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    names = ["plain"] + [f"ddp-{n}" for n in args.procs.split(",") if n]
    names += [f"group-{n}" for n in args.groups.split(",") if n]
    results: dict[str, list[dict]] = {n: [] for n in names}
    for round_ in range(args.repeat):
        for name in names:
            r = run_one(args, name)
            results[name].append(r)
            print(
                f"round {round_ + 1} {name}: {r['samples_per_s']:.1f} samples/s, val acc {r['accuracy']:.3f}",
                flush=True,
            )
    plain = statistics.median(r["samples_per_s"] for r in results["plain"])
    print(
        f"\n{results['plain'][0]['device']}, {results['plain'][0]['train_bins']} train bins, "
        f"{args.epochs} epochs (first excluded), {args.image_size} px, effective batch {args.batch_size}, "
        f"{args.threads} thread(s) per process, {args.repeat} rounds"
    )
    print(f"{'config':8} {'min':>8} {'median':>8} {'max':>8} {'speed-up':>9} {'efficiency':>10}")
    for name in names:
        v = sorted(r["samples_per_s"] for r in results[name])
        med = statistics.median(v)
        n = 1 if name == "plain" else int(name.split("-")[1])
        print(f"{name:8} {v[0]:8.1f} {med:8.1f} {v[-1]:8.1f} {med / plain:8.2f}x {med / plain / n:9.0%}")


if __name__ == "__main__":
    main()
