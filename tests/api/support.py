"""Helpers shared by tests/api and tests/e2e: tiny real checkpoints, a real `binwatch serve` process, images.

Checkpoints are trained once per test session (on 32 real ABID photos, 2 batches at 64 px, a few seconds on
CPU) into the session's temporary folder and reused by every test that asks, from either package.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from tests.conftest import ABID, REPO, free_port, wait_for_port

BINWATCH = Path(sys.executable).with_name("binwatch")


def tiny_checkpoint(root: Path, seed: int) -> Path:
    """A real, small, quickly trained checkpoint (``best.pt`` + sidecar); cached under ``root``."""
    out = root / f"tiny-seed{seed}"
    best = out / "best.pt"
    if best.is_file() and best.with_suffix(".json").is_file():
        return best
    from model.abid import LocalSource, load_records
    from model.config import TrainConfig
    from model.subsets import stratified_sample
    from model.training import train

    source = LocalSource(ABID)
    records = load_records(source)
    train_recs = stratified_sample([r for r in records if r.split == "train"], 32, seed=1)
    val_recs = stratified_sample([r for r in records if r.split == "val"], 16, seed=1)
    # schedule="cosine": onecycle divides by zero when an epoch is capped at 2 batches (reported).
    cfg = TrainConfig(
        architecture="resnet18",
        image_size=64,
        epochs=1,
        batch_size=16,
        num_workers=0,
        max_train_batches=2,
        schedule="cosine",
        seed=seed,
    )
    train(cfg, source, train_recs, val_recs, out, progress=False)
    # Only best.pt is served; last.pt holds optimizer state and would triple the disk used.
    (out / "last.pt").unlink(missing_ok=True)
    (out / "last.json").unlink(missing_ok=True)
    return best


def create_key(database_url: str, *scopes: str, name: str = "test") -> str:
    """A new API key with ``scopes``, written straight to the database (as `binwatch apikeys create`)."""
    from records import apikeys
    from records.db import make_engine, make_session_factory, session_scope

    engine = make_engine(database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return apikeys.create_api_key(session, name, list(scopes)).secret
    finally:
        engine.dispose()


def clean_env(**overrides: str) -> dict[str, str]:
    """The test process's environment without any BINWATCH_* setting, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINWATCH_")}
    env.update(overrides)
    return env


def run_cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BINWATCH), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"binwatch {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


@dataclass
class Server:
    """A `binwatch serve` process on a free port, its output in a log file."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, key: str | None = None, timeout: float = 120) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def wait_ready(self, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        with self.client() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
                last = client.get("/readyz")
                if last.status_code == 200:
                    return last.json()
                time.sleep(0.2)
        raise AssertionError(f"not ready after {timeout}s: {last.text if last else None}\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def vm_hwm_kb(self) -> int:
        """Peak resident memory of the server process (Linux), to show an input was not decoded."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")


def start_server(
    env: dict[str, str],
    log_dir: Path,
    timeout: float = 120,
    args: tuple[str, ...] = (),
    command: tuple[str, ...] | None = None,
) -> Server:
    """``binwatch serve [args]`` (or ``command``, another way to start the same server) on a free port."""
    port = free_port()
    env = dict(env, BINWATCH_HOST="127.0.0.1", BINWATCH_PORT=str(port))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"serve-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            list(command or (str(BINWATCH), "serve", *args)),
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, port, log_path, env)
    try:
        wait_for_port(port, timeout=timeout, proc=proc)
    except RuntimeError as exc:
        server.stop()
        raise AssertionError(f"{exc}\n{server.log()}") from exc
    return server


# -- images ------------------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of width x height pixels, ~50 KB compressed, built row by row (never in memory).

    Decoding it would take width*height bytes (400 MB for 20000x20000) and three times that as RGB.
    """
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def originals(n: int) -> list[Path]:
    """The first ``n`` full-size ABID photos (sorted by id)."""
    paths = sorted((ABID / "originals").glob("*.jpg"))[:n]
    assert len(paths) == n, f"need {n} photos in {ABID / 'originals'}"
    return paths
