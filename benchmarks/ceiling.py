"""The in-process ceiling for bench_service.py: Predictor from JPEG bytes at batch 16 (decode + preprocess on
``decode_threads``, then the forward pass on ``threads``) in a subprocess of its own, so its threads are the
only ones, and the latency of one batch of 8.

Run by bench_service.py as ``python benchmarks/ceiling.py SPEC_JSON``; prints one json line.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from load_harness import fail, host_busy_s, others_cores


def ceiling_worker(spec: dict[str, Any]) -> None:
    import torch

    from model.predictor import Predictor

    torch.set_num_threads(spec["threads"])
    torch.set_num_interop_threads(1)
    predictor = Predictor(
        spec["checkpoint"],
        device="cpu",
        backend=spec["backend"],
        threads=spec["threads"],
        decode_threads=spec["decode_threads"],
    )
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


def run_ceiling(
    checkpoint: Path,
    photos: Sequence[Path],
    threads: int,
    duration: float,
    backend: str,
    decode_threads: int,
) -> dict[str, Any]:
    spec = {
        "backend": backend,
        "decode_threads": decode_threads,
        "checkpoint": str(checkpoint),
        "photos": [str(p) for p in photos],
        "threads": threads,
        "duration": duration,
        "batch8_repeats": 20,
    }
    children0, busy0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), host_busy_s(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, json.dumps(spec)],
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


if __name__ == "__main__":
    ceiling_worker(json.loads(sys.argv[1]))
