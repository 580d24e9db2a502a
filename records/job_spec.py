"""What a training job asks for: the dataset, the hyperparameters and the promotion policy.

The API validates a submission against these models and stores them on the job row (``dataset`` and
``params``); the worker reads them back from there. Keeping the schema here, next to the row, means the
two sides agree on it without importing each other.

``params`` on the row holds both what the client asked (``hyperparameters``) and the full training
configuration resolved from it at submission (``config``): a later change to a recipe's defaults never
changes a queued job, and a resumed job compares equal to its own checkpoint.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model.recipes import DEFAULT_RECIPE, RECIPES
from records.text_rules import SafeLine

PromotionPolicy = Literal["never", "if_better", "always"]

# Bounds that keep one request from asking for something absurd; the deployment's own time limit
# (BINWATCH_JOB_TIME_LIMIT_SECONDS) is checked by the API on top.
MAX_IDS = 1_000_000
MAX_EPOCHS = 1000


class DatasetSpec(BaseModel):
    """An ABID-layout dataset and which of its bins to use (the options of ``binwatch train``)."""

    # strict: a JSON value of the wrong type ("seed": false, "limit": "10") is refused, never coerced.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"uri": "/data/abid", "limit": 2000, "seed": 0},
                {"uri": "s3://my-bucket/abid/", "min_count": 0, "max_count": 10},
            ]
        },
    )

    uri: SafeLine = Field(
        min_length=1,
        max_length=2048,
        description="A folder on the worker hosts, or s3://bucket/prefix, in ABID layout "
        "(bin-images/<id>.jpg, metadata/<id>.json, optional manifest.csv with a train/val split).",
    )
    endpoint_url: SafeLine | None = Field(
        default=None,
        max_length=2048,
        description="S3-compatible endpoint (MinIO) for an s3:// uri. Only endpoints on the deployment's "
        "allow-list (BINWATCH_DATASET_ENDPOINT_ALLOWLIST, empty by default) are accepted.",
    )
    min_count: int | None = Field(
        default=None, ge=0, description="Only bins with at least this many objects."
    )
    max_count: int | None = Field(default=None, ge=0, description="Only bins with at most this many objects.")
    ids: list[Annotated[SafeLine, Field(min_length=1, max_length=128)]] | None = Field(
        default=None,
        max_length=MAX_IDS,
        description="Only these bin ids (strings: '00121' and '121' differ). "
        "`binwatch jobs submit --ids FILE` and `--file-list file_list.json` send their ids here.",
    )
    limit: int | None = Field(default=None, ge=1, description="At most this many bins, stratified by count.")
    seed: int = Field(default=0, description="Seed for sampling and splitting.")
    val_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="Validation share when the dataset has no manifest split."
    )

    @field_validator("uri")
    @classmethod
    def _supported_uri(cls, value: str) -> str:
        if "://" in value and not value.startswith("s3://"):
            raise ValueError("use a folder path or an s3://bucket/prefix URI")
        return value

    @model_validator(mode="after")
    def _ordered_counts(self) -> DatasetSpec:
        if self.min_count is not None and self.max_count is not None and self.min_count > self.max_count:
            raise ValueError(f"min_count {self.min_count} is above max_count {self.max_count}")
        return self


class Hyperparameters(BaseModel):
    """Training settings; anything left out comes from the recipe (model/recipes.py)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"recipe": "cpu-quick"},
                {"recipe": "gpu-full", "epochs": 30, "lr": 0.003},
                {"architecture": "resnet18", "epochs": 4, "image_size": 64, "batch_size": 16, "k": 6},
            ]
        },
    )

    recipe: SafeLine | None = Field(
        default=None,
        max_length=64,
        description=f"{', '.join(RECIPES)}; default {DEFAULT_RECIPE} (model/recipes.py).",
    )
    architecture: (
        Literal[
            "resnet18",
            "resnet34",
            "resnet50",
            "efficientnet-lite0",
            "efficientnet-lite1",
            "efficientnet-lite2",
        ]
        | None
    ) = None
    epochs: int | None = Field(default=None, ge=1, le=MAX_EPOCHS)
    lr: float | None = Field(default=None, gt=0, le=10, description="Peak learning rate.")
    batch_size: int | None = Field(default=None, ge=1, le=4096)
    image_size: int | None = Field(default=None, ge=32, le=1024, description="Square input size in pixels.")
    k: int | None = Field(default=None, ge=2, le=100, description="Overflow class starts at K (6: 0..5, 6+).")
    classes: Literal["overflow", "udacity"] | None = None
    out_of_range: Literal["overflow", "drop"] | None = None
    optimizer: Literal["adamw", "sgd"] | None = None
    schedule: Literal["onecycle", "cosine", "constant"] | None = None
    seed: int | None = None
    max_train_batches: int | None = Field(default=None, ge=1, description="Cap batches per epoch.")
    time_limit_seconds: int | None = Field(
        default=None,
        ge=10,
        description="Soft time limit of this job (the hard one adds a grace period). Default and maximum: "
        "the deployment's BINWATCH_JOB_TIME_LIMIT_SECONDS.",
    )

    def train_config_values(self) -> dict[str, Any]:
        """The settings that go into the recipe (everything but the time limit), unset ones left out."""
        return self.model_dump(exclude_none=True, exclude={"time_limit_seconds", "recipe"})


def resolve_config(hp: Hyperparameters) -> dict[str, Any]:
    """The full training configuration for ``hp`` (the recipe plus overrides), as JSON.

    Raises ValueError (unknown recipe, invalid combination) with a message fit for a 422 response.
    """
    from pydantic import ValidationError

    from model.recipes import recipe_config

    try:
        cfg = recipe_config(hp.recipe, **hp.train_config_values())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid training configuration: {problems}") from exc
    # The worker host picks the device; stored as "auto" so any worker can take the job.
    return cfg.model_dump(mode="json") | {"device": "auto"}


def _endpoint_origin(url: str) -> str | None:
    """scheme://host:port of an http(s) URL, lower-cased, default ports filled in; None if not one."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    port = port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}"


def check_endpoint(endpoint_url: str | None, allowlist: list[str]) -> None:
    """Raise ValueError unless ``endpoint_url`` is None or names an origin on ``allowlist``.

    A worker sends signed requests (its S3 credentials) and reads replies from a dataset's endpoint, so a
    client choosing one could point the worker at any address it can reach: the operator's list decides,
    and it is empty by default. Origins are compared (scheme, host, port); paths are ignored.
    """
    if endpoint_url is None:
        return
    origin = _endpoint_origin(endpoint_url)
    allowed = {o for o in (_endpoint_origin(entry) for entry in allowlist) if o}
    if origin is None or origin not in allowed:
        where = (
            f"allowed: {', '.join(sorted(allowed))}"
            if allowed
            else "none are allowed on this deployment; leave endpoint_url out"
        )
        raise ValueError(
            "endpoint_url is not on this deployment's list of dataset endpoints "
            f"(BINWATCH_DATASET_ENDPOINT_ALLOWLIST; {where})"
        )


def check_dataset_root(uri: str, roots: list[str]) -> None:
    """Raise ValueError when ``roots`` is set and the folder ``uri`` names is not inside one of them.

    Compared lexically (``..`` collapsed, no symlinks followed: the API does not see the worker hosts'
    disks). s3:// URIs are not folders and pass; endpoints have their own list (``check_endpoint``).
    """
    import posixpath

    if not roots or uri.startswith("s3://"):
        return
    if not uri.startswith("/"):
        raise ValueError(f"dataset.uri must be an absolute path under {', '.join(roots)} on this deployment")
    path = posixpath.normpath(uri)
    for root in roots:
        base = posixpath.normpath(root)
        if path == base or path.startswith(base.rstrip("/") + "/"):
            return
    raise ValueError(
        f"dataset.uri {path} is outside the folders training jobs may read on this deployment "
        f"(BINWATCH_DATASET_ROOTS: {', '.join(roots)})"
    )
