"""Throughput and latency of the HTTP service under load, against a naive server and the in-process ceiling.

One run starts ``binwatch serve`` on the embedded default (a fresh temporary BINWATCH_HOME: SQLite, local
artifacts, the bundled counter installed on first start), the naive server (benchmarks/naive_server.py:
FastAPI + uvicorn, batch 1 per request, no auth/DB) on the same checkpoint, and drives both with wrk (a C
load generator, so the client is not one more Python process fighting for the GIL and the cores) POSTing
real full-size ABID photos, one per request, to /v1/predictions. Between rounds a separate Python process
measures the ceilings (benchmarks/ceiling.py): Predictor from JPEG bytes at batch 16 (decode + preprocess +
forward) with the service's backend (``--backend``, onnx as `auto` picks on a CPU) and with eager PyTorch
(the reference), threads = the cores the servers get, and the latency of one batch of 8.

Runs are interleaved (round r: ceiling, then for each client count every server in turn), so a shared,
noisy machine slows all of them alike; the table shows min / median / max over the rounds and the ratios
of the medians. wrk runs on the same cores as the servers (-t1 by default): its CPU share is printed.

Run: .venv/bin/python benchmarks/bench_service.py [--duration 10] [--repeats 3] [--clients 1,8,16,64]
     [--workers 1[,2]] [--backend onnx|torch] [--naive-backend torch|onnx] [--env K=V ...]
     [--skip-naive] [--torchserve] [--json out.json]
Needs wrk (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# Run as a script: this folder is on sys.path, so its sibling module imports as a top-level one.
from ceiling import run_ceiling
from load_harness import (
    Server,
    check_prediction,
    clean_env,
    fail,
    free_port,
    run_wrk,
    service_key,
    start,
    stop,
    tree_peak_mib,
    tree_pids,
    tree_rss_each_mib,
    tree_rss_mib,
    wait_ready,
    write_bodies,
)
from torchserve_target import start_torchserve

ROOT = Path(__file__).resolve().parents[1]
ABID = ROOT.parent / "shared" / "abid"
NAIVE_SERVER = Path(__file__).resolve().with_name("naive_server.py")
NOISY_CORES = 0.25  # others' CPU above this in any run: the report warns that the figures are disturbed


def log(message: str) -> None:
    # Progress on stderr; stdout carries only the tables.
    print(message, file=sys.stderr, flush=True)


# -- report ----------------------------------------------------------------------------------------------


def mmm(values: Sequence[float], fmt: str = "{:.1f}") -> str:
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "–"


def median_cell(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.2f}" if known else "–"


def report(
    servers: list[Server],
    naive: Server | None,
    torchserve: Server | None,
    ceilings: dict[str, list[dict[str, Any]]],
    clients: list[int],
    context: list[str],
) -> None:
    everyone = servers + [s for s in (naive, torchserve) if s is not None]
    # The first ceiling (the service's backend) is the one the servers are compared with.
    reference = next(iter(ceilings))
    ceiling = ceilings[reference]
    ceiling_img_s = [c["img_s"] for c in ceiling]
    ceiling_med = statistics.median(ceiling_img_s)
    batch8 = statistics.median(statistics.median(c["batch8_ms"]) for c in ceiling)
    for line in context:
        print(line)
    print()
    print(
        "| server | clients | img/s min / median / max | p50 ms | p95 ms | p99 ms | errors | server CPU "
        "| wrk CPU | others' CPU | vs ceiling | vs naive | vs TorchServe |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in ceilings.items():
        img_s = [c["img_s"] for c in runs]
        print(
            f"| in-process ceiling, {name} (Predictor, batch 16) | – | {mmm(img_s)} | – | – | – | – | – | – "
            f"| {median_cell([c['others_cpu_cores'] for c in runs])} "
            f"| {ratio(statistics.median(img_s), ceiling_med)} | – | – |"
        )

    def med(server: Server | None, n: int, key: str) -> float | None:
        if server is None or not server.runs.get(n):
            return None
        return statistics.median(r[key] for r in server.runs[n])

    notes = []
    for server in everyone:
        for n in clients:
            runs = server.runs[n]
            errors = sum(r["errors"] for r in runs)
            if errors:
                detail: dict[str, int] = {}
                for r in runs:
                    for k, v in {**r["statuses"], **r["socket_errors"]}.items():
                        detail[k] = detail.get(k, 0) + v
                notes.append(
                    f"{server.name}, {n} clients: " + ", ".join(f"{k} x{v}" for k, v in detail.items())
                )
            img_s = med(server, n, "img_s")
            print(
                f"| {server.name} | {n} | {mmm([r['img_s'] for r in runs])} | {med(server, n, 'p50_ms'):.1f} "
                f"| {med(server, n, 'p95_ms'):.1f} | {med(server, n, 'p99_ms'):.1f} | {errors} "
                f"| {med(server, n, 'server_cpu_cores'):.2f} | {med(server, n, 'wrk_cpu_cores'):.2f} "
                f"| {median_cell([r['others_cpu_cores'] for r in runs])} "
                f"| {ratio(img_s, ceiling_med)} | {ratio(img_s, med(naive, n, 'img_s'))} "
                f"| {ratio(img_s, med(torchserve, n, 'img_s'))} |"
            )
    print()
    print(
        "img/s: successful predictions (one photo each) per second; p50/p95/p99: wrk's latency, median over "
        "the rounds; errors: non-2xx answers plus socket errors and timeouts, summed over the rounds; "
        "CPU columns: cores busy on average during the run (median over the rounds) for the server (all its "
        "processes), wrk, and everything else on the machine (other users' work: noise); "
        "vs ceiling / vs naive / vs TorchServe: ratio of the medians."
    )
    for note in notes:
        print(f"errors: {note}")
    others = [c["others_cpu_cores"] for runs in ceilings.values() for c in runs] + [
        r["others_cpu_cores"] for s in everyone for runs in s.runs.values() for r in runs
    ]
    busy = max((v for v in others if v is not None), default=0.0)
    if busy > NOISY_CORES:
        # Two torch threads on two cores collapse when a third busy thread shares them (each parallel
        # region waits for the descheduled one), so the ceiling, not only the servers, is unreliable then.
        print(
            f"WARNING: other work on the machine kept up to {busy:.2f} cores busy during some runs "
            "(others' CPU): these figures, the ceiling above all, are not those of a quiet machine; rerun."
        )
    print()
    print(f"In-process batch of 8 (JPEG bytes -> counts, {reference}): median {batch8:.1f} ms.")
    if 8 in clients:
        for server in everyone:
            p99 = med(server, 8, "p99_ms")
            print(f"  {server.name}: p99 at 8 clients {p99:.1f} ms = {ratio(p99, batch8)} x one batch of 8")
    print()
    print(
        "| server | processes | RSS at start MiB | RSS at end MiB | peak MiB (sum of per-process peaks) "
        "| RSS after each run, in order, MiB |"
    )
    print("|---|---|---|---|---|---|")
    for server in everyone:
        peak = f"{server.peak_mib:.0f}" if server.peak_mib is not None else "–"
        after = sorted((r["t"], r["rss_mib"]) for runs in server.runs.values() for r in runs)
        trail = " ".join(f"{rss:.0f}" for _, rss in after)
        print(
            f"| {server.name} | {server.processes} | {server.rss_start_mib:.0f} | {server.rss_end_mib:.0f} "
            f"| {peak} | {trail} |"
        )
    print()
    for server in everyone:
        each = ", ".join(f"{name} {mib:.0f}" for name, mib in server.rss_each_mib.items())
        print(f"RSS per process at the end, MiB: {server.name}: {each}")


# -- main ------------------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    return key, value


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM ends the benchmark like Ctrl-C does: through the finally blocks that stop the servers."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="rounds; the table shows min/median/max (default 3)"
    )
    ap.add_argument(
        "--clients", type=int_list, default=[1, 8, 16, 64], help="wrk connections (default 1,8,16,64)"
    )
    ap.add_argument(
        "--workers",
        type=int_list,
        default=[1],
        help="BINWATCH_WORKERS; a list (1,2) runs one service per value in the same run",
    )
    ap.add_argument(
        "--env",
        type=env_pair,
        action="append",
        default=[],
        metavar="K=V",
        help="extra environment for every service under test (repeatable), e.g. OMP_NUM_THREADS=1 "
        "or BINWATCH_BATCH_MAX_WAIT_MS=2",
    )
    ap.add_argument(
        "--backend",
        choices=["onnx", "torch"],
        default="onnx",
        help="BINWATCH_INFERENCE_BACKEND of the services, and the ceiling the ratios use (default onnx, as "
        "`auto` picks on a CPU); eager PyTorch with serial decoding (Predictor before this issue) is "
        "measured too",
    )
    ap.add_argument(
        "--naive-backend",
        choices=["onnx", "torch"],
        default="torch",
        help="forward pass of the naive server (default torch: the plain handler a user would write first)",
    )
    ap.add_argument("--skip-naive", action="store_true", help="do not run the naive server")
    ap.add_argument(
        "--torchserve",
        action="store_true",
        help="also run TorchServe (batch 16, 5 ms; benchmarks/torchserve_target.py; needs Java 17+)",
    )
    ap.add_argument("--json", type=Path, help="also write every run's figures here")
    ap.add_argument("--abid", type=Path, default=ABID, help="ABID folder with originals/*.jpg")
    ap.add_argument("--photos", type=int, default=64, help="full-size photos the requests cycle through")
    ap.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of the discarded warm-up run per server, at the most clients (default: --duration)",
    )
    ap.add_argument(
        "--ceiling-duration",
        type=float,
        default=None,
        help="seconds per in-process ceiling measurement (default: --duration); shorter for long soaks",
    )
    ap.add_argument(
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk threads (default 1: wrk shares the cores with the servers)",
    )
    ap.add_argument(
        "--wrk-timeout",
        type=float,
        default=30.0,
        help="seconds before wrk counts a request as timed out (default 30)",
    )
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        raise fail(
            "wrk is not installed; it is the load generator. Install it with `apt-get install wrk` "
            "(Debian/Ubuntu) or `brew install wrk` (macOS), then run this again."
        )
    photos = sorted((args.abid / "originals").glob("*.jpg"))[: args.photos]
    if not photos:
        raise fail(f"no photos in {args.abid / 'originals'} (--abid)")
    cores = len(os.sched_getaffinity(0))  # what the servers (our children) may use
    warmup = args.duration if args.warmup is None else args.warmup
    ceiling_s = args.duration if args.ceiling_duration is None else args.ceiling_duration
    extra_env = dict(args.env)
    load_start = os.getloadavg()

    servers: list[Server] = []
    naive: Server | None = None
    torchserve: Server | None = None
    # name -> (backend, decode threads): the service's path first (the ratios use it), then the path
    # Predictor.predict took before decoding went parallel and ONNX Runtime came in.
    ceiling_paths = {
        f"{args.backend}, decode on {cores} threads": (args.backend, cores),
        "torch, serial decode (before)": ("torch", 1),
    }
    ceilings: dict[str, list[dict[str, Any]]] = {name: [] for name in ceiling_paths}
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="binwatch-bench-") as tmp_name:
        tmp = Path(tmp_name)
        bodies_dir = tmp / "bodies"
        bodies = write_bodies(photos, bodies_dir)
        try:
            # The naive server and the ceiling load the checkpoint the service registers: the bundled
            # counter, materialised once here (imported late: only this step needs torch in this process).
            from model.bundle import materialise

            checkpoint = materialise(tmp / "checkpoint")
            for workers in args.workers:
                label = ", ".join([f"workers={workers}", *(f"{k}={v}" for k, v in extra_env.items())])
                port = free_port()
                home = tmp / f"home-w{workers}"
                home.mkdir()
                env = {
                    **clean_env(),
                    "BINWATCH_HOME": str(home),
                    "BINWATCH_HOST": "127.0.0.1",
                    "BINWATCH_PORT": str(port),
                    "BINWATCH_WORKERS": str(workers),
                    "BINWATCH_INFERENCE_BACKEND": args.backend,
                    **extra_env,
                }
                log(f"starting binwatch serve ({label}) on port {port} ...")
                # cwd = the home folder: no .env from the working directory leaks into the settings.
                server = start(
                    f"service ({label})", [sys.executable, "-m", "binwatch", "serve"], env, home, port
                )
                servers.append(server)
                wait_ready(server)
                server.api_key = service_key(server, env, home)
            if not args.skip_naive:
                port = free_port()
                log(f"starting the naive server on port {port} ...")
                naive = start(
                    f"naive (uvicorn, batch 1, {args.naive_backend})",
                    [
                        sys.executable,
                        str(NAIVE_SERVER),
                        "--checkpoint",
                        str(checkpoint),
                        "--port",
                        str(port),
                        "--threads",
                        str(cores),
                        "--backend",
                        args.naive_backend,
                    ],
                    clean_env(),
                    tmp,
                    port,
                )
                wait_ready(naive)
            if args.torchserve:
                log("starting TorchServe (set up under runs/torchserve/ on first use) ...")
                (tmp / "torchserve").mkdir()
                torchserve = start_torchserve(checkpoint, tmp / "torchserve", cores)
                wait_ready(torchserve)
            targets = servers + [s for s in (naive, torchserve) if s is not None]
            for server in targets:
                check_prediction(server, bodies[0])
                server.rss_start_mib = tree_rss_mib(server.proc.pid)
                server.runs = {n: [] for n in args.clients}
            for server in targets:
                log(f"warm-up: {server.name}, {max(args.clients)} clients, {warmup:g} s (discarded)")
                run_wrk(server, max(args.clients), warmup, bodies_dir, len(bodies), args)
            for r in range(args.repeats):
                for name, (backend, decoders) in ceiling_paths.items():
                    log(f"round {r + 1}/{args.repeats}: in-process ceiling, {name}")
                    runs = ceilings[name]
                    runs.append(run_ceiling(checkpoint, photos, cores, ceiling_s, backend, decoders))
                    log(f"  {runs[-1]['img_s']:.1f} img/s")
                for n in args.clients:
                    for server in targets:
                        res = run_wrk(server, n, args.duration, bodies_dir, len(bodies), args)
                        # After each run, with the run's start order: growth over a long soak shows here.
                        res["rss_mib"], res["t"] = tree_rss_mib(server.proc.pid), time.monotonic()
                        server.runs[n].append(res)
                        log(
                            f"  {server.name}, {n} clients: {res['img_s']:.1f} img/s, "
                            f"p99 {res['p99_ms']:.1f} ms, errors {res['errors']}"
                        )
            for server in targets:
                server.rss_end_mib = tree_rss_mib(server.proc.pid)
                server.peak_mib = tree_peak_mib(server.proc.pid)
                server.rss_each_mib = tree_rss_each_mib(server.proc.pid)
                server.processes = len(tree_pids(server.proc.pid))
        finally:
            for server in [*servers, *(s for s in (naive, torchserve) if s is not None)]:
                stop(server)
    load_end = os.getloadavg()
    context = [
        f"binwatch service benchmark, {time.strftime('%Y-%m-%d %H:%M')}: {cores} cores (affinity), "
        f"{len(photos)} full-size ABID photos (one per request), wrk -t{args.wrk_threads} on the same cores, "
        f"{args.duration:g} s per run, {args.repeats} rounds after a {warmup:g} s warm-up; service backend "
        f"{args.backend}, naive backend {args.naive_backend}; ceilings at {cores} threads.",
        f"load average (1 min) at start {load_start[0]:.2f}, at end {load_end[0]:.2f}: other work on the "
        "machine slows every figure; the rounds are interleaved so it slows all servers alike.",
    ]
    report(servers, naive, torchserve, ceilings, args.clients, context)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "context": context,
                    "config": {
                        "duration": args.duration,
                        "repeats": args.repeats,
                        "clients": args.clients,
                        "workers": args.workers,
                        "env": extra_env,
                        "photos": len(photos),
                        "cores": cores,
                        "wrk_threads": args.wrk_threads,
                        "warmup": warmup,
                        "backend": args.backend,
                        "naive_backend": args.naive_backend,
                    },
                    "ceilings": ceilings,
                    "servers": [
                        {
                            "name": s.name,
                            "rss_start_mib": s.rss_start_mib,
                            "rss_end_mib": s.rss_end_mib,
                            "peak_mib": s.peak_mib,
                            "rss_each_mib": s.rss_each_mib,
                            "processes": s.processes,
                            "runs": s.runs,
                        }
                        for s in [*servers, *(s for s in (naive, torchserve) if s is not None)]
                    ],
                },
                indent=2,
            )
        )
        log(f"wrote {args.json}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # The servers were stopped on the way out (main's finally); no traceback for a Ctrl-C.
        sys.exit("bench_service: interrupted; servers stopped")
