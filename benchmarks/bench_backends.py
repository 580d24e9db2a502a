"""Forward-pass backends side by side: eager PyTorch, TorchScript, ONNX Runtime fp32 and int8, one checkpoint.

The shared 2-core machine is noisy, so every backend is timed in the same run, alternately, ``--repeat``
rounds, on the same thread count; the table shows min / median / max and the ratio of medians to eager fp32
(the path served before, and the reference). Figures:

- model only: images/s of the forward pass (+ softmax and class mapping) on preprocessed tensors of full-size
  ABID photos, batch 1, 16 and 32;
- end to end: images/s from JPEG bytes of full-size photos (decode + preprocess + forward) at batch 1 and 16,
  and decode + preprocess alone (the part no backend changes).

Then validation accuracy of each backend on the manifest's val split (bin-images, the serving preprocessing),
and how often its label differs from eager's.

ORT int8 is measured here only: a static quantisation (QDQ, per-channel int8 weights, uint8 activations,
min-max ranges) of the served fp32 ONNX graph, calibrated on ``--calibration`` real train-split bins
(stratified by count, the model's own preprocessing). It is not a Predictor backend because it lost more than
0.5 point of 0-5 validation accuracy (docs/performance.md); this benchmark re-measures it for new checkpoints.

Run: .venv/bin/python benchmarks/bench_backends.py --threads 2 --repeat 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.abid import LocalSource, load_records
from model.bundle import materialise
from model.logits import softmax
from model.metrics import evaluate_predictions
from model.onnx_backend import make_session, ort_version, run_session
from model.predictor import Predictor
from model.subsets import stratified_sample

ABID = Path(__file__).resolve().parents[1].parent / "shared" / "abid"
Forward = Callable[[torch.Tensor], np.ndarray]


def cpu_description() -> tuple[str, list[str]]:
    """CPU model name and the int8 dot-product extensions it has (VNNI makes int8 convolutions cheap)."""
    name, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return name, sorted(flags & {"avx512_vnni", "avx_vnni", "avx512f", "avx2"})


def torchscript_forward(net: torch.nn.Module, image_size: int) -> Forward:
    """Traced, frozen and optimize_for_inference'd (conv-bn folding, MKL-DNN layouts where torch sees fit)."""
    example = torch.zeros(2, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        traced = torch.jit.trace(net.eval(), example)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))

    def forward(batch: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return frozen(batch.contiguous(memory_format=torch.channels_last)).float().numpy()

    return forward


def calibration_bins(abid: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` real train-split bins, stratified by count, deterministic."""
    train = [r for r in load_records(LocalSource(abid)) if r.split == "train"]
    return [r.id for r in stratified_sample(train, n, seed=seed)]


def quantize_int8(fp32_onnx: Path, calibration: np.ndarray, out: Path) -> None:
    """Static int8 QDQ quantisation of ``fp32_onnx``; ``calibration`` is N x 3 x H x W preprocessed bins."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        # Equal batches of 8: 200 bins split evenly (the histogram calibrators need equal shapes).
        def __init__(self) -> None:
            self.start = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= len(calibration):
                return None
            self.start += 8
            return {"images": np.ascontiguousarray(calibration[self.start - 8 : self.start])}

    pre = out.with_name("pre.onnx")
    # Shape inference and graph cleanup first, as onnxruntime recommends before quantising.
    quant_pre_process(fp32_onnx, pre)
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def rate(step: Callable[[Any], object], items: Sequence[Any], batch: int) -> float:
    """Images per second of ``step`` over ``items`` in whole batches of ``batch``."""
    t0 = time.perf_counter()
    for i in range(0, len(items) - batch + 1, batch):
        step(items[i : i + batch])
    return (len(items) // batch) * batch / (time.perf_counter() - t0)


def figures(blobs: list[bytes], tensors: torch.Tensor) -> dict[str, Callable[[Predictor], float]]:
    return {
        "model img/s, batch 1": lambda p: rate(p.predict_tensors, tensors, 1),
        "model img/s, batch 16": lambda p: rate(p.predict_tensors, tensors, 16),
        "model img/s, batch 32": lambda p: rate(p.predict_tensors, tensors, 32),
        "JPEG bytes -> counts img/s, batch 1": lambda p: rate(p.predict, blobs, 1),
        "JPEG bytes -> counts img/s, batch 16": lambda p: rate(p.predict, blobs, 16),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--checkpoint", default="bundled", help="checkpoint path, or 'bundled' (the default model)"
    )
    ap.add_argument("--abid", type=Path, default=ABID)
    ap.add_argument("--n", type=int, default=96, help="full-size photos per speed measurement")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    ap.add_argument("--calibration", type=int, default=200, help="train bins to calibrate int8 on")
    ap.add_argument("--calibration-seed", type=int, default=0)
    ap.add_argument("--val-limit", type=int, default=0, help="stratified val subset (0: the whole split)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    blobs = [p.read_bytes() for p in sorted((args.abid / "originals").glob("*.jpg"))[: args.n]]

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = materialise(Path(tmp) / "bundled") if args.checkpoint == "bundled" else Path(args.checkpoint)
        cache = Path(tmp) / "onnx-cache"  # a fresh cache: the build times below are real builds
        t0 = time.perf_counter()
        eager = Predictor(ckpt, device="cpu")
        t_eager = time.perf_counter() - t0
        t0 = time.perf_counter()
        onnx = Predictor(ckpt, device="cpu", backend="onnx", threads=args.threads, onnx_cache_dir=cache)
        t_onnx = time.perf_counter() - t0
        assert onnx.onnx is not None and onnx.onnx.model_path is not None
        cal_ids = calibration_bins(args.abid, args.calibration, args.calibration_seed)
        t0 = time.perf_counter()
        cal_x = torch.stack([eager.preprocess(args.abid / "bin-images" / f"{i}.jpg") for i in cal_ids])
        quantize_int8(onnx.onnx.model_path, cal_x.numpy(), Path(tmp) / "int8.onnx")
        t_int8 = time.perf_counter() - t0
        int8_session = make_session(Path(tmp) / "int8.onnx", args.threads)
        # Same Predictor (preprocessing, temperature, classes), int8 forward: bench-only swap.
        int8 = Predictor(ckpt, device="cpu")
        int8._forward = lambda batch: run_session(int8_session, batch.contiguous().numpy())
        cached = Predictor(ckpt, backend="onnx", threads=args.threads, onnx_cache_dir=cache)
        assert cached.onnx is not None and cached.onnx.cache_hit
        variants: dict[str, Predictor] = {"eager fp32": eager}
        try:
            # Same Predictor (preprocessing, temperature, classes), TorchScript forward: bench-only swap.
            scripted = Predictor(ckpt, device="cpu")
            scripted._forward = torchscript_forward(scripted.net, scripted.preprocessing.image_size)
            variants["TorchScript fp32"] = scripted
        except Exception as exc:  # noqa: BLE001 - report whatever torch.jit says, keep measuring the rest
            print(f"TorchScript freeze + optimize_for_inference failed: {type(exc).__name__}: {exc}")
        variants["ORT fp32"] = onnx
        # The same session with idle threads busy-waiting: faster back to back, slower beside decoding.
        variants["ORT fp32, spinning"] = Predictor(
            ckpt, backend="onnx", threads=args.threads, onnx_cache_dir=cache, onnx_spinning=True
        )
        variants["ORT int8 (not offered)"] = int8

        tensors = torch.stack([eager.preprocess(b) for b in blobs])
        decode_rates: list[float] = []
        for p in variants.values():
            for batch in (1, 16, 32):  # warm-up: allocator and per-shape kernel selection
                p.predict_tensors(tensors[:batch])
        measures = figures(blobs, tensors)
        results: dict[str, dict[str, list[float]]] = {name: {k: [] for k in measures} for name in variants}
        names = list(variants)
        for round_no in range(args.repeat):
            decode_rates.append(rate(lambda chunk: [eager.preprocess(b) for b in chunk], blobs, 16))
            # Every backend runs one figure within seconds of the others, in an order rotated each round,
            # so bursts of load from other processes on the shared cores fall on all of them alike.
            order = names[round_no % len(names) :] + names[: round_no % len(names)]
            for key, measure in measures.items():
                for name in order:
                    results[name][key].append(measure(variants[name]))

        # Accuracy on real validation bins, through the serving preprocessing.
        records = [r for r in load_records(LocalSource(args.abid)) if r.split == "val"]
        if args.val_limit:
            records = stratified_sample(records, args.val_limit, seed=0)
        val_x = torch.stack([eager.preprocess(args.abid / "bin-images" / f"{r.id}.jpg") for r in records])
        counts = [r.count for r in records]
        logits = {
            name: np.concatenate([p.logits(val_x[i : i + 64]) for i in range(0, len(val_x), 64)])
            for name, p in variants.items()
        }

    name, vnni = cpu_description()
    print(
        f"date {dt.date.today()}, CPU {name} ({', '.join(vnni)}), torch {torch.__version__} "
        f"({args.threads} threads), onnxruntime {ort_version()}"
    )
    print(
        f"checkpoint {args.checkpoint}: {eager.metadata['architecture']} at "
        f"{eager.preprocessing.image_size}px; {len(blobs)} full-size ABID photos; {args.repeat} rounds"
    )
    print(
        f"start-up: eager {t_eager:.1f}s, ORT fp32 {t_onnx:.1f}s (export + check + cache), "
        f"ORT int8 {t_int8:.1f}s (calibrate on {len(cal_ids)} "
        f"train bins + quantise); decode + preprocess alone {min(decode_rates):.1f} / "
        f"{statistics.median(decode_rates):.1f} / {max(decode_rates):.1f} img/s (JPEG draft mode on)"
    )
    print()
    # The ratio of maxima compares each backend's least disturbed round: the quiet-machine figure.
    print("| figure | backend | min / median / max | ratio to eager fp32: of medians, of maxima |")
    print("|---|---|---|---|")
    for key in measures:
        base = results["eager fp32"][key]
        for variant, runs in results.items():
            values = runs[key]
            med = statistics.median(values)
            spread = f"{min(values):.1f} / {med:.1f} / {max(values):.1f}"
            ratios = f"{med / statistics.median(base):.2f}, {max(values) / max(base):.2f}"
            print(f"| {key} | {variant} | {spread} | {ratios} |")
    print()
    split = (
        f"stratified {len(records)}-bin subset of val"
        if args.val_limit
        else f"val split, {len(records)} bins"
    )
    print(f"Accuracy ({split}; temperature {eager.temperature:.3f} applied):")
    print(
        "| backend | exact accuracy | accuracy 0-5 | accuracy 0-5 restricted | labels differing from eager | "
        "max |prob - eager prob| |"
    )
    print("|---|---|---|---|---|---|")
    ref_probs = softmax(logits["eager fp32"], eager.temperature)
    for variant, lg in logits.items():
        probs = softmax(lg, eager.temperature)
        ev = evaluate_predictions(probs, counts, eager.classes)
        sub = ev.subsets["0-5"]
        differ = int((probs.argmax(1) != ref_probs.argmax(1)).sum())
        print(
            f"| {variant} | {100 * ev.accuracy:.2f}% | {100 * sub.accuracy:.2f}% | "
            f"{100 * sub.accuracy_restricted:.2f}% | {differ} ({100 * differ / len(counts):.2f}%) | "
            f"{np.abs(probs - ref_probs).max():.2e} |"
        )


if __name__ == "__main__":
    main()
