"""The naive way to serve the counter: the reference bench_service.py measures the real service against.

A minimal FastAPI app that loads a checkpoint into ``model.predictor.Predictor`` and, per request, decodes,
preprocesses and runs one forward pass per photo at batch 1: no batching across requests, no API keys, no
database, no upload checks, no metrics. It answers ``POST /v1/predictions`` (parts named ``images``, as the
service) with the counts, so the same wrk script drives both.

The handler is a plain ``def``: FastAPI runs it in its threadpool, so one request's decoding overlaps
another's forward pass (Predictor's lock lets one forward pass run at a time). That is the usual way to
write it and the stronger of the two naive baselines; an ``async def`` handler would run everything on
the event loop, one request at a time.

Run: .venv/bin/python benchmarks/naive_server.py [--checkpoint bundled] [--port 8001] [--threads N]
(``bundled``, the default, is the counter that ships with binwatch, materialised into a temporary folder.)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile

from model.bundle import materialise
from model.predictor import Predictor


def create_app(predictor: Predictor) -> FastAPI:
    app = FastAPI(title="binwatch naive baseline")

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/predictions")
    def predict(images: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
        out = []
        for upload in images:
            # Batch 1 per photo: decode + preprocess + forward, exactly what Predictor.predict does.
            prediction = predictor.predict([upload.file.read()])[0]
            out.append({"filename": upload.filename, **prediction.to_dict()})
        return {"predictions": out}

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="bundled", help="checkpoint path, or 'bundled' (default)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: the cores this process may run on, as the service's budget)",
    )
    ap.add_argument(
        "--backend",
        choices=["torch", "onnx"],
        default="torch",
        help="Predictor backend (default torch: eager PyTorch, the handler a user writes first)",
    )
    args = ap.parse_args()
    # Same rule as the service's thread budget (api/thread_budget.py) for one worker: torch gets every core
    # the process may use, and one inter-op thread, since forward passes run one at a time.
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    torch.set_num_interop_threads(1)
    if args.checkpoint == "bundled":
        # Predictor holds the weights in memory once built, so the materialised file can go at once: uvicorn
        # re-raises the SIGTERM it stops on, and clean-up placed after uvicorn.run would never run.
        with tempfile.TemporaryDirectory(prefix="binwatch-naive-") as tmp:
            predictor = Predictor(materialise(Path(tmp)), device="cpu", backend=args.backend)
    else:
        predictor = Predictor(args.checkpoint, device="cpu", backend=args.backend)
    # uvicorn's defaults (access log on), as `binwatch serve` at its default BINWATCH_LOG_LEVEL=INFO.
    uvicorn.run(create_app(predictor), host=args.host, port=args.port, workers=1)


if __name__ == "__main__":
    main()
