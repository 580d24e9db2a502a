"""The training loop: seeded, resumable, cancellable, with best/last checkpoints every epoch.

Nothing here assumes it is the only process (no global RNG seeding, no module state), so the same loop
can run under torchrun later. Callers observe progress through ``TrainHooks`` (the worker records epochs
in the database and uploads checkpoints from there) and stop it with ``should_stop``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from model import operating_points
from model.abid import BinRecord, Source
from model.checkpoint import CheckpointError, load_payload, save_checkpoint
from model.config import TrainConfig
from model.data import BinImages, CachedImages
from model.datasets import mix_weights
from model.distributed import Group, device_for, join
from model.logits import fit_temperature, normalise, predict_logits, softmax, to_input, with_autocast
from model.losses import CountingLoss
from model.metrics import Evaluation, evaluate_predictions
from model.network import build_network
from model.optimization import build_optimizer, build_schedule, set_backbone_frozen
from model.subsets import histogram, stratified_split


class TrainingCancelled(RuntimeError):
    """``should_stop`` asked the loop to stop; the last completed epoch's checkpoint is kept."""


@dataclass
class EpochResult:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    val_loss: float
    evaluation: Evaluation
    duration_s: float
    lr: float
    is_best: bool
    last_path: Path
    best_path: Path

    def summary(self) -> dict[str, float]:
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "lr": self.lr,
            "duration_s": self.duration_s,
            **self.evaluation.headline(),
        }


@dataclass
class TrainHooks:
    on_epoch_end: Callable[[EpochResult], None] | None = None
    should_stop: Callable[[], bool] | None = None
    # How many batches pass between should_stop checks; small so cancellation lands within seconds.
    stop_check_every: int = 5


@dataclass
class TrainResult:
    best_path: Path
    last_path: Path
    history: list[dict[str, float]]
    evaluation: Evaluation
    temperature: float
    resumed_from_epoch: int
    wall_time_s: float
    plots: dict[str, Path] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for but torch sees no CUDA GPU on this host")
    return dev


def code_version() -> str:
    try:
        return version("binwatch")
    except PackageNotFoundError:
        return "unknown"


def build_datasets(
    source: Source,
    train_records: Sequence[BinRecord],
    val_records: Sequence[BinRecord],
    cfg: TrainConfig,
    progress: bool = True,
) -> tuple[Dataset, Dataset]:
    classes, pre = cfg.count_classes(), cfg.preprocessing()
    train = BinImages(source, train_records, classes, pre)
    val = BinImages(source, val_records, classes, pre)
    if len(train) == 0:
        raise ValueError("no training images left after applying the count classes; check the subset options")
    if len(val) == 0:
        raise ValueError("no validation images left after applying the count classes")
    if cfg.cache_images:
        return (
            CachedImages(train, cfg.num_workers, progress, "decode train"),
            CachedImages(val, cfg.num_workers, progress, "decode val"),
        )
    return train, val


def train(
    cfg: TrainConfig,
    source: Source,
    train_records: Sequence[BinRecord],
    val_records: Sequence[BinRecord],
    out_dir: str | Path,
    hooks: TrainHooks | None = None,
    resume: bool = True,
    progress: bool = True,
    group: Group | None = None,
) -> TrainResult:
    """Train a counter; writes ``best.pt``/``last.pt`` (+ json sidecars and plots) into ``out_dir``.

    With ``resume`` and an existing ``out_dir/last.pt`` from the same configuration, training continues
    after the last completed epoch instead of starting over. ``group``: a group formed by the caller
    (model/distributed.py ``form``); by default the one torchrun set up, or a group of one.
    """
    started = time.monotonic()
    hooks = hooks or TrainHooks()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    best_path, last_path = out / "best.pt", out / "last.pt"
    device = device_for(cfg.device)
    if group is None:
        group = join(device)  # a group of one outside torchrun (model/distributed.py)
    batch_size = group.per_process_batch(cfg.batch_size)
    progress = progress and group.is_main
    classes, pre = cfg.count_classes(), cfg.preprocessing()
    augment = cfg.augmentation()

    # Data first: its DataLoader workers fork, which must happen before CUDA is initialised.
    calib_records: list[BinRecord] = []
    if cfg.calibrate and cfg.calibration_fraction > 0:
        # Fit the temperature on bins held out of training, so the validation split stays untouched; from
        # the first dataset only, whose class mix the probabilities are meant for (model/datasets.py).
        reference = [r for r in train_records if r.dataset == 0]
        others = [r for r in train_records if r.dataset != 0]
        reference, calib_records, _ = stratified_split(
            reference, val_fraction=cfg.calibration_fraction, seed=cfg.seed
        )
        train_records = sorted(reference + others, key=lambda r: (r.dataset, r.id))
    class_weights = mix_weights(train_records, classes) if cfg.mix_balance == "first" else None
    train_ds, val_ds = build_datasets(source, train_records, val_records, cfg, progress)
    calib_ds = BinImages(source, calib_records, classes, pre) if calib_records else None

    torch.manual_seed(cfg.seed)  # torchvision init draws from the default generator
    net = build_network(cfg.architecture, classes.num_classes, cfg.pretrained, cfg.image_size).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    ema: torch.optim.swa_utils.AveragedModel | None = None
    if cfg.ema_decay:
        ema = torch.optim.swa_utils.AveragedModel(
            net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay)
        )

    per_process = math.ceil(len(train_ds) / group.world_size)  # the sampler pads to this
    steps_per_epoch = math.ceil(per_process / batch_size)
    if cfg.max_train_batches:
        steps_per_epoch = min(steps_per_epoch, cfg.max_train_batches)
    trainee: nn.Module = net
    if group.active:
        # Gradients are averaged across processes in backward; ``net`` (unwrapped) is what gets saved.
        trainee = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    opt = build_optimizer(net, cfg)
    sched = build_schedule(opt, cfg, steps_per_epoch)
    loss_fn = CountingLoss(
        classes.num_classes, cfg.label_smoothing, cfg.ordinal_sigma, cfg.expected_count_weight, class_weights
    ).to(device)
    use_scaler = device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    history: list[dict[str, float]] = []
    start_epoch, best_score, stale = 0, -math.inf, 0
    config_json = cfg.model_dump(mode="json")
    state = None
    if group.is_main and resume and last_path.is_file():
        try:
            state = _load_training_state(last_path, config_json)
        except CheckpointError as exc:
            state = exc
    if group.active:
        state = group.broadcast(state)  # only rank 0 needs the output folder
    if isinstance(state, CheckpointError):
        raise state
    if state is not None:
        net.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        history = list(state["history"])
        start_epoch = int(state["metadata"]["epoch"])
        best_score = float(state["best_score"])
        stale = int(state["stale_epochs"])
    resumed_from = start_epoch

    data_summary = {
        "source": source.uri,
        "train": {"n": len(train_ds), "histogram": {str(k): v for k, v in histogram(train_records).items()}},
        "val": {"n": len(val_ds), "histogram": {str(k): v for k, v in histogram(val_records).items()}},
        "calibration": {"n": len(calib_records)},
    }
    if class_weights is not None:
        data_summary["datasets"] = {
            str(i): {str(k): v for k, v in histogram([r for r in train_records if r.dataset == i]).items()}
            for i in sorted({r.dataset for r in train_records})
        }
        data_summary["class_weights"] = dict(zip(classes.labels, class_weights, strict=True))

    def metadata(epoch: int, evaluation: Evaluation | None, temperature: float) -> dict[str, Any]:
        return {
            "architecture": cfg.architecture,
            "classes": classes.to_dict(),
            "labels": classes.labels,
            "preprocessing": pre.to_dict(),
            "temperature": temperature,
            "epoch": epoch,
            "epochs": cfg.epochs,
            "metrics": evaluation.to_dict() if evaluation else None,
            "history": history,
            "data": data_summary,
            "train_config": config_json,
            "code_version": code_version(),
            "created_at": datetime.now(UTC).isoformat(),
        }

    for epoch in range(start_epoch, cfg.epochs):
        if stale and cfg.early_stopping_patience and stale >= cfg.early_stopping_patience:
            break
        t0 = time.monotonic()
        net.train()
        set_backbone_frozen(net, epoch < cfg.freeze_epochs)
        # Dropout draws from the default generator: reseeding per epoch keeps a resumed run identical.
        torch.manual_seed(cfg.seed * 1000 + epoch)
        # Per-epoch generator: a resumed run draws the same batches and augmentations as an unbroken one.
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch + 7919 * group.rank)
        sampler = None
        if group.active:
            sampler = DistributedSampler(
                train_ds, num_replicas=group.world_size, rank=group.rank, shuffle=True, seed=cfg.seed
            )
            sampler.set_epoch(epoch)
        loader = DataLoader(
            train_ds,
            batch_size=batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=gen if sampler is None else None,
            num_workers=0 if isinstance(train_ds, CachedImages) else cfg.num_workers,
            drop_last=per_process > batch_size,
        )
        running, seen = 0.0, 0
        bar = tqdm(
            total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False
        )
        for step, (images, targets, _counts) in enumerate(loader):
            if step >= steps_per_epoch:
                break
            if hooks.should_stop and step % hooks.stop_check_every == 0 and _agreed(group, hooks.should_stop):
                bar.close()
                raise TrainingCancelled(f"stopped during epoch {epoch + 1}")
            x = to_input(images, pre, device, cfg.channels_last)
            x = normalise(augment(x, gen), pre, cfg.channels_last)
            y = targets.to(device)
            with with_autocast(device, cfg.amp):
                loss = loss_fn(trainee(x).float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if ema is not None:
                ema.update_parameters(net)
            running += float(loss.detach()) * len(y)
            seen += len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{running / seen:.3f}")
        bar.close()
        if hooks.should_stop and _agreed(group, hooks.should_stop):
            raise TrainingCancelled(f"stopped at the end of epoch {epoch + 1}")
        if group.active:
            running, seen = group.sum(running, seen)
            if not group.is_main:
                # Rank 0 evaluates and writes; the others learn whether early stopping ends the run.
                stale = group.broadcast(None)
                continue

        eval_net = ema.module if ema is not None else net
        if ema is not None:
            # BatchNorm statistics are not averaged by EMA; copy the live ones.
            for b_ema, b in zip(ema.module.buffers(), net.buffers(), strict=True):
                b_ema.copy_(b)
        logits, targets_np, counts_np = predict_logits(
            eval_net,
            val_ds,
            pre,
            device,
            channels_last=cfg.channels_last,
            amp=cfg.amp,
            workers=cfg.num_workers,
        )
        val_loss = float(nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(targets_np)))
        evaluation = evaluate_predictions(softmax(logits), counts_np, classes)
        score = selection_score(evaluation.accuracy, val_loss, len(val_ds))
        is_best = score > best_score
        if is_best:
            best_score, stale = score, 0
        else:
            stale += 1
        row = {
            "epoch": epoch + 1,
            "train_loss": running / max(1, seen),
            "val_loss": val_loss,
            "lr": float(sched.get_last_lr()[0]),
            "duration_s": time.monotonic() - t0,
            **evaluation.headline(),
        }
        history.append(row)
        weights = {k: v for k, v in eval_net.state_dict().items()}
        if is_best:
            save_checkpoint(best_path, weights, metadata(epoch + 1, evaluation, 1.0))
        extra = {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "history": history,
            "best_score": best_score,
            "stale_epochs": stale,
        }
        if ema is not None:
            extra["ema"] = ema.state_dict()
        save_checkpoint(last_path, net.state_dict(), metadata(epoch + 1, evaluation, 1.0), extra)
        if group.active:
            group.broadcast(stale)
        if hooks.on_epoch_end:
            hooks.on_epoch_end(
                EpochResult(
                    epoch=epoch + 1,
                    epochs=cfg.epochs,
                    train_loss=row["train_loss"],
                    val_loss=val_loss,
                    evaluation=evaluation,
                    duration_s=row["duration_s"],
                    lr=row["lr"],
                    is_best=is_best,
                    last_path=last_path,
                    best_path=best_path,
                )
            )

    result = None
    if group.is_main:
        result = finalise(cfg, best_path, last_path, val_ds, calib_ds, device, history, resumed_from, started)
    if group.active:
        result = group.broadcast(result)
    assert result is not None
    return result


def selection_score(accuracy: float, val_loss: float, val_size: int) -> float:
    """How epochs are ranked for ``best.pt``: accuracy first, the validation loss only breaks ties.

    The loss term stays below half an accuracy step (1 / val_size) whatever the loss, so a diverging run
    (losses in the millions) still keeps its most accurate epoch, not its least bad loss. Non-finite loss:
    NaN, never best.
    """
    if not math.isfinite(val_loss):
        return math.nan
    return accuracy - (val_loss / (1.0 + val_loss)) / (2.0 * max(1, val_size))


def _agreed(group: Group, should_stop: Callable[[], bool]) -> bool:
    """True on every process when any of them asks to stop, so that all of them stop at the same step.

    Rank 0 asks for the job (cancel, time limit, its worker shutting down); another process asks when its
    own host is going away (a spot notice on a member node of a training job, worker/groups.py).
    """
    if not group.active:
        return should_stop()
    return group.sum(1.0 if should_stop() else 0.0)[0] > 0


def _load_training_state(path: Path, config_json: dict[str, Any]) -> dict[str, Any]:
    state = load_payload(path)
    if "optimizer" not in state:
        raise CheckpointError(f"{path} holds no training state to resume from")
    saved = dict(state["metadata"].get("train_config") or {})
    try:
        # Older checkpoints lack settings added since; read them with today's defaults.
        saved = TrainConfig(**saved).model_dump(mode="json")
    except ValueError:
        pass
    mine = dict(config_json)
    # Settings that only change how fast or where it runs may differ on resume; the recipe may not.
    for key in ("device", "num_workers", "cache_images", "epochs", "early_stopping_patience"):
        saved.pop(key, None)
        mine.pop(key, None)
    if saved != mine:
        diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
        raise CheckpointError(
            f"{path} was written with a different training configuration ({', '.join(diff)}); "
            "use a fresh output folder or the same settings to resume"
        )
    return state


def finalise(
    cfg: TrainConfig,
    best_path: Path,
    last_path: Path,
    val_ds: Dataset,
    calib_ds: Dataset | None,
    device: torch.device,
    history: list[dict[str, float]],
    resumed_from: int,
    started: float,
) -> TrainResult:
    """Reload the best weights, calibrate, evaluate on val, write the final checkpoint metadata and plots."""
    from model.checkpoint import load_model
    from model.plots import plot_confusion, plot_history

    loaded = load_model(best_path)
    net = loaded.net.to(device)
    pre = loaded.preprocessing
    logits, targets, counts = predict_logits(
        net, val_ds, pre, device, channels_last=cfg.channels_last, amp=cfg.amp
    )
    temperature = 1.0
    if cfg.calibrate and calib_ds is not None and len(calib_ds) > 0:
        calib_logits, calib_targets, _ = predict_logits(net, calib_ds, pre, device, amp=cfg.amp)
        temperature = fit_temperature(calib_logits, calib_targets)
    elif cfg.calibrate:
        temperature = fit_temperature(logits, targets)
    probs = softmax(logits, temperature)
    evaluation = evaluate_predictions(probs, counts, loaded.classes)
    meta = dict(loaded.metadata, temperature=temperature, metrics=evaluation.to_dict(), history=history)
    # The verdict thresholds this version is judged with, measured on its own validation predictions.
    meta["operating_points"] = operating_points.compute(
        probs, counts, loaded.classes, f"its validation split, {len(counts)} bins"
    )
    meta["wall_time_s"] = time.monotonic() - started
    payload = load_payload(best_path)
    save_checkpoint(best_path, payload["state_dict"], meta)
    plots = {
        "confusion_matrix": plot_confusion(evaluation, best_path.with_name("confusion_matrix.png")),
        "training_curves": plot_history(history, best_path.with_name("training_curves.png")),
    }
    return TrainResult(
        best_path=best_path,
        last_path=last_path,
        history=history,
        evaluation=evaluation,
        temperature=temperature,
        resumed_from_epoch=resumed_from,
        wall_time_s=time.monotonic() - started,
        plots=plots,
    )
