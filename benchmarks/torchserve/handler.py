"""TorchServe handler for the side-by-side service benchmark (benchmarks/bench_service.py --torchserve).

The same weights as binwatch serves (the bundled checkpoint), decoded and preprocessed by binwatch's own
Predictor so the pixels are identical, with the forward pass in eager PyTorch: what a TorchServe user would
deploy. TorchServe batches requests (batchSize/maxBatchDelay in its config); each request is one multipart
part named "images" holding one JPEG, and gets back {"predictions": [...]} like /v1/predictions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler

from model.predictor import Predictor


class BinwatchCounter(BaseHandler):
    def initialize(self, context: Any) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        threads = int(os.environ.get("BENCH_TORCH_THREADS", "0")) or len(os.sched_getaffinity(0))
        torch.set_num_threads(threads)
        self.predictor = Predictor(model_dir / "best.pt", device="cpu", backend="torch")
        self.initialized = True

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        blobs = []
        for row in data:
            body = row.get("images") or row.get("data") or row.get("body")
            blobs.append(bytes(body))
        predictions = self.predictor.predict(blobs)
        return [json.dumps({"predictions": [p.to_dict()]}) for p in predictions]
