"""Servers under load for bench_service.py: start and stop them, account their CPU and memory, drive them
with wrk.

Process accounting covers a server and all its children (uvicorn workers), from psutil where installed or
Linux's /proc otherwise. wrk is the load generator (C, not one more Python process fighting for the GIL):
benchmarks/wrk/predictions.lua POSTs pre-built multipart bodies, one real photo each, and prints its
figures as one ``BENCH_JSON`` line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).resolve().with_name("wrk") / "predictions.lua"
# One boundary for every body: the Lua script sets Content-Type once. Checked against each photo's bytes.
BOUNDARY = "binwatch-bench-7f3c91d2a6e84b05"
# records/apikeys.py: "bw_" + 32 url-safe characters. Not \b: a key may end in "-", which \b would miss.
KEY_RE = re.compile(r"(?<![A-Za-z0-9_-])bw_[A-Za-z0-9_-]{32}(?![A-Za-z0-9_-])")
READY_TIMEOUT_S = 300.0  # first start migrates SQLite, materialises and registers the bundled model
STOP_TIMEOUT_S = 30.0


def fail(message: str) -> SystemExit:
    return SystemExit(f"bench_service: {message}")


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


def tree_rss_each_mib(root: int) -> dict[str, float]:
    """RSS of every process in the tree, by "name pid" (uvicorn workers show one by one)."""
    each = {}
    for pid in tree_pids(root):
        name = "?"
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        if psutil is not None:
            with contextlib.suppress(psutil.Error):
                each[f"{name} {pid}"] = psutil.Process(pid).memory_info().rss / 2**20
        else:
            each[f"{name} {pid}"] = _status_kib(pid, "VmRSS") / 1024
    return each


def tree_rss_mib(root: int) -> float:
    return sum(tree_rss_each_mib(root).values())


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
    predict_path: str = "/v1/predictions"  # where wrk POSTs the photos
    ready_path: str = "/readyz"  # 200 once the server answers predictions
    rss_start_mib: float = 0.0
    rss_end_mib: float = 0.0
    peak_mib: float | None = None
    rss_each_mib: dict[str, float] = field(default_factory=dict)
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
            with urllib.request.urlopen(server.base_url + server.ready_path, timeout=5) as resp:
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
    raise fail(
        f"{server.name} not ready after {timeout:.0f} s (last {server.ready_path}: {last}):\n"
        + server.log_tail()
    )


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
        server.base_url + server.predict_path,
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "X-API-Key": server.api_key},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        answer = f"{exc.code}: {exc.read()[:500]!r}"
        raise fail(f"{server.name}: POST {server.predict_path} answered {answer}") from exc
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
        server.base_url + server.predict_path,
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
