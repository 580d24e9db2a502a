"""Inference speed and memory of the counting model on real full-size ABID photos.

Prints decode time per photo (with and without JPEG draft mode), model throughput by batch size, end-to-end
images/s through Predictor.predict, and peak RSS. Run: .venv/bin/python benchmarks/bench_predict.py CHECKPOINT
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from model.predictor import Predictor
from model.preprocess import load_rgb

ABID = Path(__file__).resolve().parents[1].parent / "shared" / "abid"


def timed(fn, repeat: int = 3) -> float:
    best = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t0)
    return min(best)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--abid", type=Path, default=ABID)
    ap.add_argument("--n", type=int, default=64, help="number of full-size photos to use")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = sorted((args.abid / "originals").glob("*.jpg"))[: args.n]
    blobs = [p.read_bytes() for p in photos]
    predictor = Predictor(args.checkpoint, device="cpu")
    size = predictor.preprocessing.image_size
    print(
        f"checkpoint {args.checkpoint}: {predictor.metadata['architecture']} at {size}px, "
        f"torch threads {torch.get_num_threads()}, {len(photos)} full-size photos"
    )

    def decode_full() -> None:
        for b in blobs:
            import io

            Image.open(io.BytesIO(b)).convert("RGB").resize((size, size))

    def decode_draft() -> None:
        for b in blobs:
            load_rgb(b, size)

    full = timed(decode_full) / len(blobs) * 1e3
    draft = timed(decode_draft) / len(blobs) * 1e3
    print(
        f"decode+resize per photo: full decode {full:.2f} ms, draft mode {draft:.2f} ms ({full / draft:.1f}x)"
    )

    tensors = torch.stack([predictor.preprocess(b) for b in blobs])
    predictor.predict_tensors(tensors[:2])  # warm-up
    print("batch  model-only img/s  latency ms/batch")
    for bs in (1, 4, 8, 16, 32):
        if bs > len(tensors):
            break
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            for i in range(0, len(tensors) - bs + 1, bs):
                predictor.predict_tensors(tensors[i : i + bs])
            times.append(time.perf_counter() - t0)
        n = (len(tensors) // bs) * bs
        t = min(times)
        print(f"{bs:5d}  {n / t:16.1f}  {t / (n / bs) * 1e3:16.1f}")
    t0 = time.perf_counter()
    for i in range(0, len(blobs), 16):
        predictor.predict(blobs[i : i + 16])
    e2e = time.perf_counter() - t0
    lat = []
    for b in blobs[:16]:
        t1 = time.perf_counter()
        predictor.predict([b])
        lat.append((time.perf_counter() - t1) * 1e3)
    print(
        f"end to end (bytes -> counts), batch 16: {len(blobs) / e2e:.1f} img/s; "
        f"single image median latency {statistics.median(lat):.1f} ms"
    )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
