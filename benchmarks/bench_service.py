"""Throughput and latency of the HTTP service under load, against a naive server and the in-process ceiling.

One run starts ``binwatch serve`` on the embedded default (a fresh temporary BINWATCH_HOME: SQLite, local
artifacts, the bundled counter installed on first start), the naive server (benchmarks/naive_server.py:
FastAPI + uvicorn, batch 1 per request, no auth/DB) on the same checkpoint, and drives both with wrk (a C
load generator, so the client is not one more Python process fighting for the GIL and the cores) POSTing
real full-size ABID photos, one per request, to /v1/predictions. Between rounds a separate Python process
measures the ceiling: Predictor from JPEG bytes at batch 16 (decode + preprocess + forward), with torch
threads = the cores the servers get, and the latency of one batch of 8.

Runs are interleaved (round r: ceiling, then for each client count every server in turn), so a shared,
noisy machine slows all of them alike; the table shows min / median / max over the rounds and the ratios
of the medians. wrk runs on the same cores as the servers (-t1 by default): its CPU share is printed.

Run: .venv/bin/python benchmarks/bench_service.py [--duration 10] [--repeats 3] [--clients 1,8,16,64]
     [--workers 1[,2]] [--env K=V ...] [--skip-naive] [--json out.json]
Needs wrk (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ABID = ROOT.parent / "shared" / "abid"
LUA_SCRIPT = Path(__file__).resolve().with_name("wrk") / "predictions.lua"
NAIVE_SERVER = Path(__file__).resolve().with_name("naive_server.py")
# One boundary for every body: the Lua script sets Content-Type once. Checked against each photo's bytes.
BOUNDARY = "binwatch-bench-7f3c91d2a6e84b05"
# records/apikeys.py: "bw_" + 32 url-safe characters. Not \b: a key may end in "-", which \b would miss.
KEY_RE = re.compile(r"(?<![A-Za-z0-9_-])bw_[A-Za-z0-9_-]{32}(?![A-Za-z0-9_-])")
READY_TIMEOUT_S = 300.0  # first start migrates SQLite, materialises and registers the bundled model
STOP_TIMEOUT_S = 30.0
NOISY_CORES = 0.25  # others' CPU above this in any run: the report warns that the figures are disturbed


def fail(message: str) -> SystemExit:
    return SystemExit(f"bench_service: {message}")


def log(message: str) -> None:
    # Progress on stderr; stdout carries only the tables.
    print(message, file=sys.stderr, flush=True)


# -- process tree: RSS and CPU time of a server and all its children (uvicorn workers) --------------------


try:  # psutil where installed (portable); otherwise Linux's /proc
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None  # type: ignore[assignment]


def tree_pids(root: int) -> list[int]:
    if psutil is not None:
        try:
            proc = psutil.Process(root)
            return [root, *(c.pid for c in proc.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name (field 2) may hold spaces and parentheses: the fields after it follow the
            # last ')'. ppid is the second of them.
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def _status_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def tree_rss_mib(root: int) -> float:
    total = 0
    for pid in tree_pids(root):
        if psutil is not None:
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
        else:
            total += _status_kib(pid, "VmRSS") * 1024
    return total / 2**20


def tree_peak_mib(root: int) -> float | None:
    """Sum of each process's own peak RSS (VmHWM): an upper bound of the tree's peak. Linux only."""
    if not Path("/proc/self/status").exists():
        return None
    return sum(_status_kib(pid, "VmHWM") for pid in tree_pids(root)) / 1024


def tree_cpu_s(root: int) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in tree_pids(root):
        if psutil is not None:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15)
    return total


def host_busy_s() -> float | None:
    """CPU seconds every process on the machine has used (Linux /proc/stat), None elsewhere.

    Minus what the server and wrk used in a run, it is what *other* work took from the same cores: on a
    shared machine the figure that says whether a slow run was this service's fault.
    """
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_cores(busy0: float | None, busy1: float | None, ours_s: float, wall: float) -> float | None:
    if busy0 is None or busy1 is None:
        return None
    return max(0.0, (busy1 - busy0 - ours_s) / wall)


# -- servers ---------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    api_key: str = ""
    rss_start_mib: float = 0.0
    rss_end_mib: float = 0.0
    peak_mib: float | None = None
    processes: int = 0
    runs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This environment without BINWATCH_* and PROMETHEUS_MULTIPROC_DIR: a BINWATCH_DATABASE_URL left over
    from a test run would point the service at Postgres, not the embedded default it is meant to measure."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BINWATCH_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }


def start(name: str, cmd: list[str], env: dict[str, str], cwd: Path, port: int) -> Server:
    log_path = cwd / f"{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-')}.log"
    with open(log_path, "wb") as out:
        # Its own session (process group), so the servers never see the terminal's Ctrl-C before we stop
        # them in order, and stopping the group also stops uvicorn's worker processes.
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(name, proc, f"http://127.0.0.1:{port}", log_path)


def stop(server: Server) -> None:
    if server.proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)  # the group we created in start(): its pid is its id
    try:
        server.proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()


def wait_ready(server: Server, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise fail(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.base_url + "/readyz", timeout=5) as resp:
                ready = resp.status == 200
            if ready:
                # Still ours? A server that failed to bind exits soon after; then whatever else holds the
                # port answered, and would be measured instead.
                time.sleep(1.0)
                if server.proc.poll() is None:
                    return
                continue
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.read()[:300]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise fail(f"{server.name} not ready after {timeout:.0f} s (last /readyz: {last}):\n{server.log_tail()}")


def service_key(server: Server, env: dict[str, str], cwd: Path) -> str:
    """The admin key serve printed on first start, or else a new predict key from the same database."""
    found = KEY_RE.search(server.log_path.read_text(errors="replace"))
    if found:
        return found.group(0)
    made = subprocess.run(
        [sys.executable, "-m", "binwatch", "apikeys", "create", "--name", "bench", "--scope", "predict"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    found = KEY_RE.search(made.stdout)
    if made.returncode != 0 or not found:
        raise fail(f"no API key in {server.name}'s log and `binwatch apikeys create` failed:\n{made.stderr}")
    return found.group(0)


def check_prediction(server: Server, body: bytes) -> None:
    """One request before any load: a 401 or 422 shows here with its message, not as a column of errors."""
    req = urllib.request.Request(
        server.base_url + "/v1/predictions",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "X-API-Key": server.api_key},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise fail(f"{server.name}: POST /v1/predictions answered {exc.code}: {exc.read()[:500]!r}") from exc
    if not answer.get("predictions"):
        raise fail(f"{server.name}: unexpected answer {answer!r}")


# -- load generation -------------------------------------------------------------------------------------


def write_bodies(photos: Sequence[Path], dest: Path) -> list[bytes]:
    """One multipart/form-data body per photo (part ``images``), as body_0000.bin ... for the Lua script."""
    dest.mkdir(parents=True)
    bodies = []
    for i, photo in enumerate(photos):
        data = photo.read_bytes()
        if BOUNDARY.encode() in data:  # never for a JPEG in practice; would corrupt the body if it were
            raise fail(f"{photo} contains the multipart boundary")
        body = (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; filename="{photo.name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        (dest / f"body_{i:04d}.bin").write_bytes(body)
        bodies.append(body)
    return bodies


def run_wrk(
    server: Server, clients: int, duration: float, bodies: Path, count: int, args: argparse.Namespace
) -> dict[str, Any]:
    threads = max(1, min(args.wrk_threads, clients))  # wrk needs connections >= threads
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{clients}",
        f"-d{duration:g}s",
        f"--timeout={args.wrk_timeout:g}s",
        "-s",
        str(LUA_SCRIPT),
        server.base_url + "/v1/predictions",
        "--",
        str(bodies),
        str(count),
        BOUNDARY,
    ]
    env = {**os.environ, "BENCH_API_KEY": server.api_key}  # the Lua script reads it; not on the command line
    # CPU time of wrk (the only child that ends during the run) and of the server tree, to show how the
    # cores were shared between the load generator and the server.
    children0, server0, busy0, t0 = (
        resource.getrusage(resource.RUSAGE_CHILDREN),
        tree_cpu_s(server.proc.pid),
        host_busy_s(),
        time.perf_counter(),
    )
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 120, check=False)
    wall = time.perf_counter() - t0
    children1, server1, busy1 = (
        resource.getrusage(resource.RUSAGE_CHILDREN),
        tree_cpu_s(server.proc.pid),
        host_busy_s(),
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise fail(f"wrk failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    if server.proc.poll() is not None:
        raise fail(f"{server.name} died during the run:\n{server.log_tail()}")
    stats = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = stats["duration_us"] / 1e6
    sock = stats["errors"]
    ok = stats["requests"] - stats["non2xx"]
    wrk_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    return {
        "clients": clients,
        "img_s": ok / seconds,  # one photo per request; failed requests do not count
        "requests": stats["requests"],
        "errors": stats["non2xx"] + sock["connect"] + sock["read"] + sock["write"] + sock["timeout"],
        "statuses": stats["statuses"],
        "socket_errors": {k: v for k, v in sock.items() if k != "status" and v},
        "p50_ms": stats["latency_us"]["p50"] / 1e3,
        "p95_ms": stats["latency_us"]["p95"] / 1e3,
        "p99_ms": stats["latency_us"]["p99"] / 1e3,
        "mean_ms": stats["latency_us"]["mean"] / 1e3,
        "max_ms": stats["latency_us"]["max"] / 1e3,
        "server_cpu_cores": (server1 - server0) / wall,
        "wrk_cpu_cores": wrk_cpu / wall,
        "others_cpu_cores": others_cores(busy0, busy1, (server1 - server0) + wrk_cpu, wall),
    }


# -- the in-process ceiling (a subprocess of its own, so its torch threads are the only ones) ------------


def ceiling_worker(spec: dict[str, Any]) -> None:
    import torch

    from model.predictor import Predictor

    torch.set_num_threads(spec["threads"])
    torch.set_num_interop_threads(1)
    predictor = Predictor(spec["checkpoint"], device="cpu")
    blobs = [Path(p).read_bytes() for p in spec["photos"]]
    batches = [blobs[i : i + 16] for i in range(0, len(blobs) - 15, 16)] or [blobs]
    for batch in batches[:2]:
        predictor.predict(batch)  # warm-up: allocator, one-time kernel choices
    images, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < spec["duration"] or images == 0:
        batch = batches[(images // 16) % len(batches)]
        predictor.predict(batch)
        images += len(batch)
    elapsed = time.perf_counter() - t0
    batch8 = []
    for i in range(spec["batch8_repeats"]):
        start = (i * 8) % max(1, len(blobs) - 7)
        t1 = time.perf_counter()
        predictor.predict(blobs[start : start + 8])
        batch8.append((time.perf_counter() - t1) * 1e3)
    print(json.dumps({"img_s": images / elapsed, "batch8_ms": batch8}))


def run_ceiling(checkpoint: Path, photos: Sequence[Path], threads: int, duration: float) -> dict[str, Any]:
    spec = {
        "checkpoint": str(checkpoint),
        "photos": [str(p) for p in photos],
        "threads": threads,
        "duration": duration,
        "batch8_repeats": 20,
    }
    children0, busy0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), host_busy_s(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--ceiling-worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=duration + 300,
        check=False,
    )
    if done.returncode != 0:
        raise fail(f"the in-process ceiling failed:\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    children1, busy1 = resource.getrusage(resource.RUSAGE_CHILDREN), host_busy_s()
    ours = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    # Over the whole subprocess (model load included), not only its timed loop: a rough figure.
    return {
        **json.loads(done.stdout.strip().splitlines()[-1]),
        "others_cpu_cores": others_cores(busy0, busy1, ours, wall),
    }


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
    ceiling: list[dict[str, Any]],
    clients: list[int],
    context: list[str],
) -> None:
    ceiling_img_s = [c["img_s"] for c in ceiling]
    ceiling_med = statistics.median(ceiling_img_s)
    batch8 = statistics.median(statistics.median(c["batch8_ms"]) for c in ceiling)
    for line in context:
        print(line)
    print()
    print(
        "| server | clients | img/s min / median / max | p50 ms | p95 ms | p99 ms | errors | server CPU "
        "| wrk CPU | others' CPU | vs ceiling | vs naive |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| in-process ceiling (Predictor, batch 16) | – | {mmm(ceiling_img_s)} "
        f"| – | – | – | – | – | – | {median_cell([c['others_cpu_cores'] for c in ceiling])} | 1.00 | – |"
    )

    def med(server: Server | None, n: int, key: str) -> float | None:
        if server is None or not server.runs.get(n):
            return None
        return statistics.median(r[key] for r in server.runs[n])

    notes = []
    for server in servers + ([naive] if naive else []):
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
                f"| {ratio(img_s, ceiling_med)} | {ratio(img_s, med(naive, n, 'img_s'))} |"
            )
    print()
    print(
        "img/s: successful predictions (one photo each) per second; p50/p95/p99: wrk's latency, median over "
        "the rounds; errors: non-2xx answers plus socket errors and timeouts, summed over the rounds; "
        "CPU columns: cores busy on average during the run (median over the rounds) for the server (all its "
        "processes), wrk, and everything else on the machine (other users' work: noise); "
        "vs ceiling / vs naive: ratio of the medians."
    )
    for note in notes:
        print(f"errors: {note}")
    others = [c["others_cpu_cores"] for c in ceiling] + [
        r["others_cpu_cores"]
        for s in servers + ([naive] if naive else [])
        for runs in s.runs.values()
        for r in runs
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
    print(f"In-process batch of 8 (JPEG bytes -> counts): median {batch8:.1f} ms.")
    if 8 in clients:
        for server in servers + ([naive] if naive else []):
            p99 = med(server, 8, "p99_ms")
            print(f"  {server.name}: p99 at 8 clients {p99:.1f} ms = {ratio(p99, batch8)} x one batch of 8")
    print()
    print("| server | processes | RSS at start MiB | RSS at end MiB | peak MiB (sum of per-process peaks) |")
    print("|---|---|---|---|---|")
    for server in servers + ([naive] if naive else []):
        peak = f"{server.peak_mib:.0f}" if server.peak_mib is not None else "–"
        print(
            f"| {server.name} | {server.processes} | {server.rss_start_mib:.0f} | {server.rss_end_mib:.0f} "
            f"| {peak} |"
        )


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
    ap.add_argument("--skip-naive", action="store_true", help="do not run the naive server")
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
    ap.add_argument("--ceiling-worker", help=argparse.SUPPRESS)  # internal: the ceiling subprocess
    args = ap.parse_args(argv)
    if args.ceiling_worker:
        ceiling_worker(json.loads(args.ceiling_worker))
        return
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
    extra_env = dict(args.env)
    load_start = os.getloadavg()

    servers: list[Server] = []
    naive: Server | None = None
    ceiling: list[dict[str, Any]] = []
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
                    "naive (uvicorn, batch 1)",
                    [
                        sys.executable,
                        str(NAIVE_SERVER),
                        "--checkpoint",
                        str(checkpoint),
                        "--port",
                        str(port),
                        "--threads",
                        str(cores),
                    ],
                    clean_env(),
                    tmp,
                    port,
                )
                wait_ready(naive)
            targets = servers + ([naive] if naive else [])
            for server in targets:
                check_prediction(server, bodies[0])
                server.rss_start_mib = tree_rss_mib(server.proc.pid)
                server.runs = {n: [] for n in args.clients}
            for server in targets:
                log(f"warm-up: {server.name}, {max(args.clients)} clients, {warmup:g} s (discarded)")
                run_wrk(server, max(args.clients), warmup, bodies_dir, len(bodies), args)
            for r in range(args.repeats):
                log(f"round {r + 1}/{args.repeats}: in-process ceiling ({cores} torch threads, batch 16) ...")
                ceiling.append(run_ceiling(checkpoint, photos, cores, args.duration))
                log(f"  {ceiling[-1]['img_s']:.1f} img/s")
                for n in args.clients:
                    for server in targets:
                        res = run_wrk(server, n, args.duration, bodies_dir, len(bodies), args)
                        server.runs[n].append(res)
                        log(
                            f"  {server.name}, {n} clients: {res['img_s']:.1f} img/s, "
                            f"p99 {res['p99_ms']:.1f} ms, errors {res['errors']}"
                        )
            for server in targets:
                server.rss_end_mib = tree_rss_mib(server.proc.pid)
                server.peak_mib = tree_peak_mib(server.proc.pid)
                server.processes = len(tree_pids(server.proc.pid))
        finally:
            for server in [*servers, *([naive] if naive else [])]:
                stop(server)
    load_end = os.getloadavg()
    context = [
        f"binwatch service benchmark, {time.strftime('%Y-%m-%d %H:%M')}: {cores} cores (affinity), "
        f"{len(photos)} full-size ABID photos (one per request), wrk -t{args.wrk_threads} on the same cores, "
        f"{args.duration:g} s per run, {args.repeats} rounds after a {warmup:g} s warm-up; ceiling at "
        f"{cores} torch threads.",
        f"load average (1 min) at start {load_start[0]:.2f}, at end {load_end[0]:.2f}: other work on the "
        "machine slows every figure; the rounds are interleaved so it slows all servers alike.",
    ]
    report(servers, naive, ceiling, args.clients, context)
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
                    },
                    "ceiling": ceiling,
                    "servers": [
                        {
                            "name": s.name,
                            "rss_start_mib": s.rss_start_mib,
                            "rss_end_mib": s.rss_end_mib,
                            "peak_mib": s.peak_mib,
                            "processes": s.processes,
                            "runs": s.runs,
                        }
                        for s in [*servers, *([naive] if naive else [])]
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
