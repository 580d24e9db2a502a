"""What a training job asks for: the dataset, the hyperparameters and the promotion policy.

The API validates a submission against these models and stores them on the job row (``dataset`` and
``params``); the worker reads them back from there. Keeping the schema here, next to the row, means the
two sides agree on it without importing each other.

``params`` on the row holds both what the client asked (``hyperparameters``) and the full training
configuration resolved from it at submission (``config``): a later change to a recipe's defaults never
changes a queued job, and a resumed job compares equal to its own checkpoint.

A dataset is an ABID-layout store (``uri``), the photos people reviewed in the console (``reviews``,
records/review_dataset.py), or both. The API pins ``reviews.reviewed_before`` to the submission time
(``DatasetSpec.pinned``), so every process of a job, and every resumption of it, trains on the same
reviewed photos however many are reviewed meanwhile.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from model.recipes import DEFAULT_RECIPE, RECIPES
from records.text_rules import SafeLine

PromotionPolicy = Literal["never", "if_better", "always"]

# Bounds that keep one request from asking for something absurd; the deployment's own time limit
# (BINWATCH_JOB_TIME_LIMIT_SECONDS) is checked by the API on top.
MAX_IDS = 1_000_000
MAX_EPOCHS = 1000


def _not_a_number(value: object) -> object:
    if isinstance(value, (bool, int, float)):
        # A Unix time is too easy to get wrong (seconds or milliseconds?); strict fields refuse it too.
        raise ValueError("give a date and time as ISO 8601 text with a time zone, e.g. 2026-11-01T00:00:00Z")
    return value


def _as_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+14:00 is before the first representable instant
        raise ValueError("the date is out of range") from exc


# Strict models take datetimes only as datetime objects when validating Python values, yet a JSON body
# (FastAPI validates the parsed JSON) and the stored job row carry ISO 8601 text: this one field type is
# lax, and refuses numbers itself. Normalised to UTC, the form the review timestamps are stored in.
Timestamp = Annotated[
    AwareDatetime, Field(strict=False), BeforeValidator(_not_a_number), AfterValidator(_as_utc)
]

# The subset options of the ABID part: without a uri they would select nothing, so they are refused.
ABID_ONLY_FIELDS = ("extra_uris", "endpoint_url", "min_count", "max_count", "ids", "limit")
MAX_EXTRA_DATASETS = 8


# S3's bucket-name rules (general purpose buckets): 3-63 lowercase letters, digits, dots and hyphens, a
# letter or digit at each end, no "..", not an IPv4 address. Anything else (credentials, a host:port) is
# refused here, with a 422 naming the field, rather than by botocore on a worker after the job was queued.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")


def _check_supported(value: str) -> None:
    if "://" in value and not value.startswith("s3://"):
        raise ValueError("use a folder path or an s3://bucket/prefix URI")
    if value.startswith("s3://"):
        bucket = value[5:].partition("/")[0]
        if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IPV4.fullmatch(bucket):
            raise ValueError(
                f"{bucket!r} is not an S3 bucket name (3-63 lowercase letters, digits, dots and hyphens, a "
                "letter or digit at each end); an S3-compatible server's address goes in endpoint_url"
            )


class ReviewsSpec(BaseModel):
    """Which reviewed checks to train on: photos people counted in the console (records/reviews.py)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{}, {"reviewed_after": "2026-11-01T00:00:00Z", "limit": 5000}]},
    )

    reviewed_after: Timestamp | None = Field(
        default=None,
        description="Only reviews made after this time (ISO 8601 with a time zone). Reviewing a check again "
        "makes it a new review.",
    )
    reviewed_before: Timestamp | None = Field(
        default=None,
        description="Only reviews made before this time. Default: when the job was submitted (the API "
        "fills it in), so a job resumed later, or trained by several processes, sees the same photos.",
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        description="At most this many reviewed photos: the most recently reviewed ones (of those in the "
        "time window).",
    )

    @model_validator(mode="after")
    def _ordered_times(self) -> ReviewsSpec:
        after, before = self.reviewed_after, self.reviewed_before
        if after is not None and before is not None and after >= before:
            raise ValueError(
                f"reviewed_after {after.isoformat()} is not before reviewed_before {before.isoformat()}"
            )
        return self


class DatasetSpec(BaseModel):
    """What a job trains on: an ABID-layout dataset (the options of ``binwatch train``), the photos people
    reviewed in the console, or both (the reviewed ones are added to the ABID bins)."""

    # strict: a JSON value of the wrong type ("seed": false, "limit": "10") is refused, never coerced.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"uri": "/data/abid", "limit": 2000, "seed": 0},
                {"uri": "s3://my-bucket/abid/", "min_count": 0, "max_count": 10},
                {"uri": "/data/abid", "limit": 2000, "reviews": {}},
                {"reviews": {"reviewed_after": "2026-11-01T00:00:00Z"}},
            ],
            # One or both; a schema that says so lets clients (and the API fuzzer) know it.
            "anyOf": [
                {"required": ["uri"], "properties": {"uri": {"type": "string"}}},
                {"required": ["reviews"], "properties": {"reviews": {"type": "object"}}},
            ],
        },
    )

    uri: SafeLine | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="A folder on the worker hosts, or s3://bucket/prefix, in ABID layout "
        "(bin-images/<id>.jpg, metadata/<id>.json, optional manifest.csv with a train/val split). "
        "Leave it out to train on reviewed photos only (`reviews`).",
    )
    extra_uris: list[Annotated[SafeLine, Field(min_length=1, max_length=2048)]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_EXTRA_DATASETS,
        description="More ABID-layout datasets trained on with `uri` (for example ABID photos of your own, "
        "or ../shared/abid-extra). Every bin of theirs is a training bin: validation stays on `uri`'s val "
        "split, and the loss is weighed by count so the training mix stays `uri`'s. The subset options "
        "apply to each.",
    )
    reviews: ReviewsSpec | None = Field(
        default=None,
        description="Add the photos people reviewed in the console (confirmed or counted, never unusable) "
        "with the count they gave; `{}` takes them all. They get a stratified train/val split of their own "
        "and are added to the ABID bins of `uri`, or used alone without one.",
    )
    endpoint_url: SafeLine | None = Field(
        default=None,
        max_length=2048,
        description="S3-compatible endpoint (MinIO) for an s3:// uri. Only endpoints on the deployment's "
        "allow-list (BINWATCH_DATASET_ENDPOINT_ALLOWLIST, empty by default) are accepted.",
    )
    min_count: int | None = Field(
        default=None, ge=0, description="Only ABID bins (uri) with at least this many objects."
    )
    max_count: int | None = Field(
        default=None, ge=0, description="Only ABID bins (uri) with at most this many objects."
    )
    ids: list[Annotated[SafeLine, Field(min_length=1, max_length=128)]] | None = Field(
        default=None,
        max_length=MAX_IDS,
        description="Only these ABID bin ids (strings: '00121' and '121' differ). "
        "`binwatch jobs submit --ids FILE` and `--file-list file_list.json` send their ids here.",
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        description="At most this many ABID bins (uri), stratified by count; reviews.limit caps the "
        "reviewed photos.",
    )
    seed: int = Field(default=0, description="Seed for sampling and splitting.")
    val_fraction: float = Field(
        default=0.15,
        gt=0,
        lt=1,
        description="Validation share when the ABID dataset has no manifest split, and of the reviewed "
        "photos.",
    )

    @field_validator("uri")
    @classmethod
    def _supported_uri(cls, value: str | None) -> str | None:
        if value is not None:
            _check_supported(value)
        return value

    @field_validator("extra_uris")
    @classmethod
    def _supported_uris(cls, values: list[str] | None) -> list[str] | None:
        for value in values or []:
            _check_supported(value)
        if values is not None and len(set(values)) != len(values):
            raise ValueError("a dataset is listed twice in extra_uris")
        return values

    def locations(self) -> list[tuple[list[str | int], str]]:
        """Every ABID dataset of the spec with where it sits in the body: ``uri`` first, then the others."""
        found: list[tuple[list[str | int], str]] = []
        if self.uri is not None:
            found.append((["uri"], self.uri))
        found += [(["extra_uris", i], u) for i, u in enumerate(self.extra_uris or [])]
        return found

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if self.uri is None and self.reviews is None:
            raise ValueError(
                "a dataset needs uri (an ABID-layout folder or s3:// prefix), reviews (the photos reviewed "
                'in the console: "reviews": {}), or both'
            )
        if self.uri is not None and self.uri in (self.extra_uris or []):
            raise ValueError(f"{self.uri} is both uri and one of extra_uris; give each dataset once")
        if self.uri is None:
            given = [name for name in ABID_ONLY_FIELDS if getattr(self, name) is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} select{'s' if len(given) == 1 else ''} bins of the ABID dataset, "
                    "and there is no uri; give one, or leave them out (reviews.limit caps reviewed photos)"
                )
        if self.min_count is not None and self.max_count is not None and self.min_count > self.max_count:
            raise ValueError(f"min_count {self.min_count} is above max_count {self.max_count}")
        return self

    def pinned(self, now: datetime) -> DatasetSpec:
        """This spec with ``reviews.reviewed_before`` set to ``now`` unless the client set it: the job's
        reviewed photos are then fixed at submission (the API calls this). ValueError when the window
        it gives is empty (reviewed_after not before now)."""
        if self.reviews is None or self.reviews.reviewed_before is not None:
            return self
        after = self.reviews.reviewed_after
        if after is not None and after >= now:
            raise ValueError(
                f"reviews.reviewed_after {after.isoformat()} is not before this submission "
                f"({_as_utc(now).isoformat()}): no review made so far could be used"
            )
        reviews = self.reviews.model_copy(update={"reviewed_before": _as_utc(now)})
        return self.model_copy(update={"reviews": reviews})

    def stored(self) -> dict[str, Any]:
        """The spec as the job row's JSON (``dataset``): unset options left out, times as ISO 8601 text."""
        return self.model_dump(mode="json", exclude_none=True)


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
    A dataset without a uri (reviewed photos only) has no folder to check: callers skip the call.
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
