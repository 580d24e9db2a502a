"""The one Settings object, read from the environment (prefix BINWATCH_) and an optional .env file.

Its own package, below everything that reads it: records, api and worker import it, the `binwatch` command
line (which imports api and worker) too; it imports nothing of binwatch's.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BINWATCH_", env_file=".env", extra="ignore")

    # Where embedded-default state lives (SQLite file, local artifacts) when nothing else is configured.
    home: Path = Field(default=Path("var"), description="Folder for the embedded default's state.")

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Default: sqlite file <home>/binwatch.db. Production: postgresql+psycopg://…",
    )

    artifact_store: str | None = Field(
        default=None,
        description="Where checkpoints and check images go: a folder path or s3://bucket/prefix. "
        "Default: <home>/artifacts.",
    )
    s3_endpoint_url: str | None = Field(default=None, description="Endpoint for S3-compatible stores.")
    s3_region: str = Field(default="us-east-1", description="Region for the S3 artifact store.")

    broker_url: str | None = Field(
        default=None,
        description="Celery broker. Default: kombu's SQLAlchemy transport on the SQLite file (no server). "
        "Production: redis://host:6379/0.",
    )

    host: str = Field(default="127.0.0.1", description="Interface the API binds (0.0.0.0 in Docker).")
    port: int = Field(default=8000, description="Port `binwatch serve` listens on.")
    workers: int = Field(
        default=1, ge=1, description="uvicorn worker processes; each loads the model; /metrics sums them."
    )

    cpu_cores: int | None = Field(
        default=None,
        ge=1,
        description="Cores the API may use, shared by its workers. Default: what the process's CPU affinity "
        "and cgroup quota allow (docs/performance.md).",
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch threads per API worker. Default: its share of the cores."
    )
    decode_threads: int | None = Field(
        default=None,
        ge=1,
        description="Threads per API worker that decode and preprocess photos. Default: a quarter of its "
        "share of the cores, at least 1.",
    )
    inference_backend: Literal["auto", "torch", "onnx"] = Field(
        default="auto",
        description="Forward pass of the API: torch (eager fp32, the reference), onnx (the same fp32 network "
        "through ONNX Runtime, 2-4x faster on CPUs) or auto (onnx on the CPU, torch on a GPU). A model ONNX "
        "cannot run is served by torch, with a warning.",
    )
    api_key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="An API key seen valid this recently is not looked up again; a revoked key stops "
        "working within this many seconds. 0: look up every request.",
    )

    console_session_hours: float = Field(
        default=12.0,
        gt=0,
        le=24 * 90,
        description="How long a console sign-in lasts (docs/console.md); signing out or revoking the key "
        "ends it sooner.",
    )
    console_secure_cookie: bool = Field(
        default=False,
        description="Mark the console's session cookie Secure (sent over HTTPS only). Set it when the "
        "console is served over HTTPS, as it should be anywhere but on localhost.",
    )

    max_upload_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1,
        description="Largest accepted upload: the image bytes of one request (all images of a multi-image "
        "prediction together). Bigger requests get 413, decided from Content-Length or while streaming.",
    )
    max_json_bytes: int = Field(
        default=1024 * 1024,
        ge=1,
        description="Largest accepted JSON request body (bin records, ABID metadata).",
    )
    max_images_per_request: int = Field(
        default=16, ge=1, description="Most images one POST /v1/predictions may carry (more: 413)."
    )
    max_image_pixels: int = Field(default=50_000_000, description="Larger images are rejected (bomb guard).")
    max_pixels_per_byte: float = Field(
        default=100.0,
        gt=0,
        description="A PNG, GIF, TIFF, BMP or WebP of more than a megapixel with more pixels than this per "
        "byte of file is refused (422): such formats cannot be decoded at a reduced size, and a few "
        "kilobytes of zeros can cost seconds of decoding. Photos have far fewer (JPEGs are decoded reduced).",
    )
    decode_backlog_per_key: int = Field(
        default=64,
        ge=1,
        description="Most photos one API key may have waiting to be decoded in a process; beyond it, 503 "
        "with Retry-After. Keys take turns on the decode threads (api/fair_decode.py).",
    )
    min_image_side: int = Field(
        default=32,
        ge=1,
        description="Images narrower or shorter than this many pixels are rejected with 422: a bin photo "
        "that small holds nothing countable, and the model would still answer with confident numbers.",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A connection must complete a request's headers within this many seconds of opening "
        "(or of its previous response); else 408 and closed (api/http_protocol.py).",
    )
    body_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A request's body must arrive within this many seconds of its headers; else 408 and "
        "closed.",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Most connections one API process holds; past it the oldest one still waiting for its "
        "headers is closed, or the new one gets 503. Default: the open-file limit less 128, at most 4096.",
    )
    batch_max_size: int = Field(default=16, description="Most images one inference batch holds.")
    batch_max_wait_ms: float = Field(default=5.0, description="How long a batch waits to fill up.")
    batch_queue_size: int = Field(default=256, description="Pending images before requests get 503.")
    model_poll_seconds: float = Field(
        default=5.0, description="How often each API process checks for a newly promoted model."
    )

    # Verdicts of bin checks (docs/verdicts.md): the score they read, and which of the model version's own
    # operating points (measured on its validation split, model/operating_points.py) judges. Explicit
    # thresholds override the version's points, on the chosen score.
    verdict_score: Literal["neighbour_ratio", "probability"] = Field(
        default="neighbour_ratio",
        description="What a check's thresholds apply to: neighbour_ratio (P(recorded) over the likelier of "
        "its two neighbouring counts) or probability (P(recorded) itself).",
    )
    verdict_operating_point: Literal["2%", "5%"] = Field(
        default="5%",
        description="Which of the model version's mismatch thresholds judges: the one measured to call at "
        "most 2% or at most 5% of correct records a mismatch.",
    )
    match_threshold: float | None = Field(
        default=None,
        ge=0,
        description="Score at or above this: match. Default: the model version's own match point.",
    )
    mismatch_threshold: float | None = Field(
        default=None,
        ge=0,
        description="Score below this: mismatch. Default: the model version's point for "
        "BINWATCH_VERDICT_OPERATING_POINT.",
    )

    auto_migrate: bool = Field(
        default=True,
        description="Upgrade the database schema to the newest migration when the API starts "
        "(turn off where migrations run as a separate deployment step).",
    )
    bootstrap_admin_key: bool | None = Field(
        default=None,
        description="Create an admin API key on first start when the database has none, and print it once "
        "to stderr. Default: only on the embedded default (no BINWATCH_DATABASE_URL).",
    )
    install_bundled_model: bool | None = Field(
        default=None,
        description="On start, when the registry holds no model version, register and promote the default "
        "counter that ships with binwatch (docs/model-card.md). Default: only on the embedded default; "
        "production installs it with `binwatch models install-default`.",
    )

    # Training jobs and the Celery worker (docs/training-jobs.md, docs/deployment.md).
    worker_queues: str = Field(
        default="training", description="Comma-separated queues `binwatch worker` consumes."
    )
    worker_concurrency: int = Field(default=1, ge=1, description="Jobs one worker runs at once (1 per GPU).")
    worker_pool: Literal["solo", "prefork", "threads"] = Field(
        default="solo",
        description="Celery pool. solo runs the job in the worker process itself, which never forks after "
        "CUDA is initialised: use it on GPU hosts (one worker per GPU). prefork forks its children before "
        "any job runs and replaces each after one job; it adds Celery's hard time limit.",
    )
    job_time_limit_seconds: int = Field(
        default=6 * 3600, ge=10, description="Default and largest time limit of one training job (soft)."
    )
    job_time_limit_grace_seconds: int = Field(
        default=300, ge=1, description="Hard limit = soft limit + this (prefork pool kills the job then)."
    )
    broker_visibility_timeout: int | None = Field(
        default=None,
        ge=1,
        description="Redis broker: seconds before an unacknowledged job message (its worker died) is "
        "delivered again. Must exceed the longest job, or a running job is handed to a second worker. "
        "Default: job_time_limit_seconds + job_time_limit_grace_seconds + 1 hour.",
    )
    broker_connect_timeout: float = Field(
        default=3.0, gt=0, description="How long job submission waits for the broker before answering 503."
    )
    broker_key_prefix: str = Field(
        default="", description="Prefix for the broker's Redis keys, to share one Redis between deployments."
    )
    job_heartbeat_seconds: float = Field(
        default=15.0, gt=0, description="How often a worker marks its running job as alive."
    )
    job_stale_after_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A running job not marked alive for this long is taken over by a redelivered task.",
    )
    job_cancel_poll_seconds: float = Field(
        default=1.0, gt=0, description="How stale the worker's view of a job's cancel flag may be."
    )
    job_max_attempts: int = Field(
        default=3,
        ge=1,
        description="How many workers may die running one job (crash, OOM, kill) before it fails with a "
        "message naming their hosts, instead of being handed out forever. Clean hand-backs do not count.",
    )
    job_reaper_interval_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often each worker looks for running jobs whose heartbeat went stale (their worker "
        "died and no redelivery came) and queues them again, or fails them once out of attempts.",
    )
    dataset_endpoint_allowlist: list[str] = Field(
        default_factory=list,
        description="S3-compatible endpoints a training job's dataset.endpoint_url may name (JSON list of "
        'URLs, e.g. ["http://minio:9000"]). Empty (the default): clients cannot choose an endpoint; '
        "s3:// datasets go to AWS, or to BINWATCH_S3_ENDPOINT_URL when set. Workers send their "
        "credentials only to these (docs/security.md).",
    )
    dataset_roots: list[str] = Field(
        default_factory=list,
        description="Folders on the worker hosts under which a training job's dataset.uri may point (JSON "
        'list, e.g. ["/data"]). Empty (the default): any folder the worker can read; set it wherever '
        "train keys are not fully trusted (docs/security.md).",
    )
    job_work_dir: Path | None = Field(
        default=None, description="Scratch folder for running jobs' checkpoints. Default: <home>/jobs."
    )
    instance_type: str | None = Field(
        default=None,
        description="This worker host's instance type (e.g. g5.xlarge), recorded on every job it runs and "
        "priced with BINWATCH_INSTANCE_PRICES (docs/cost.md).",
    )
    capacity: Literal["on-demand", "spot"] = Field(
        default="on-demand",
        description="How this worker host is bought: on-demand or spot (which price applies).",
    )
    instance_prices: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Hourly prices in USD by instance type, JSON: "
        '{"g5.xlarge": {"on-demand": 1.006, "spot": 0.42}}. Jobs on a type not listed get no estimate.',
    )
    instance_metadata_url: str | None = Field(
        default=None,
        description="EC2 instance metadata service (http://169.254.169.254 on EC2): workers read the "
        "instance type from it and hand their job back on a spot interruption notice. Unset: not contacted.",
    )
    spot_poll_seconds: float = Field(
        default=5.0, gt=0, description="How often a worker checks for a spot interruption notice."
    )
    node_address: str | None = Field(
        default=None,
        description="The address other worker hosts reach this one at, published for multi-node training "
        "jobs (docs/training.md). Default: this host's address on the route to the database server "
        "(127.0.0.1 for the embedded default).",
    )
    max_nodes: int = Field(default=16, ge=1, description="Most hosts (nodes) one training job may ask for.")
    max_procs_per_node: int = Field(
        default=8, ge=1, description="Most training processes per host (procs_per_node) one job may ask for."
    )
    group_form_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How long a multi-node job waits for enough workers to join its group before it fails "
        "(and frees the workers that joined).",
    )
    group_timeout_seconds: float = Field(
        default=1800.0,
        gt=0,
        description="How long one process of a training group waits for the others in a collective "
        "operation before the group is given up as lost (torch's own default).",
    )
    tuning_storage_url: str | None = Field(
        default=None,
        description="Optuna storage of tuning jobs' studies. Default: the database's own optuna schema "
        "on Postgres; <home>/binwatch-optuna.db beside the SQLite file (docs/tuning.md).",
    )
    tuning_max_trials: int = Field(default=500, ge=1, description="Most trials one tuning job may ask for.")

    device: str = Field(
        default="auto", description="torch device for inference and training: auto, cpu, cuda."
    )
    log_level: str = Field(default="INFO", description="Log level of the API and the worker.")

    @model_validator(mode="after")
    def _thresholds_are_ordered(self) -> Settings:
        # An inverted pair would make some scores both a match and a mismatch.
        match, mismatch = self.match_threshold, self.mismatch_threshold
        if match is not None and mismatch is not None and mismatch > match:
            raise ValueError(
                "verdict thresholds must satisfy mismatch_threshold <= match_threshold, got "
                f"mismatch_threshold={mismatch}, match_threshold={match}"
            )
        if self.verdict_score == "probability" and any(t is not None and t > 1 for t in (match, mismatch)):
            raise ValueError(
                "with BINWATCH_VERDICT_SCORE=probability the thresholds are probabilities: at most 1, got "
                f"mismatch_threshold={mismatch}, match_threshold={match}"
            )
        return self

    @property
    def uses_embedded_database(self) -> bool:
        """True when no database URL is configured: the SQLite file under ``home``."""
        return not self.database_url

    @property
    def should_bootstrap_admin_key(self) -> bool:
        if self.bootstrap_admin_key is not None:
            return self.bootstrap_admin_key
        return self.uses_embedded_database

    @property
    def should_install_bundled_model(self) -> bool:
        if self.install_bundled_model is not None:
            return self.install_bundled_model
        return self.uses_embedded_database

    @property
    def model_cache_dir(self) -> Path:
        """Where API processes keep verified copies of model checkpoints, named by sha256."""
        return (self.home / "model-cache").resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'binwatch.db').resolve()}"

    @property
    def resolved_artifact_store(self) -> str:
        return self.artifact_store or str((self.home / "artifacts").resolve())

    @property
    def resolved_visibility_timeout(self) -> int:
        if self.broker_visibility_timeout:
            return self.broker_visibility_timeout
        return self.job_time_limit_seconds + self.job_time_limit_grace_seconds + 3600

    @property
    def resolved_job_work_dir(self) -> Path:
        return (self.job_work_dir or self.home / "jobs").resolve()

    @property
    def resolved_tuning_storage_url(self) -> str:
        """Optuna's storage URL. Optuna keeps a table named ``alembic_version`` of its own, so it never
        shares binwatch's tables: on Postgres it gets the ``optuna`` schema (created by migration 0004),
        on SQLite a file of its own beside the database file."""
        if self.tuning_storage_url:
            return self.tuning_storage_url
        from sqlalchemy.engine import make_url

        url = make_url(self.resolved_database_url)
        if url.get_backend_name() == "postgresql":
            return url.update_query_dict({"options": "-csearch_path=optuna"}).render_as_string(
                hide_password=False
            )
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            db = Path(url.database)
            return str(url.set(database=str(db.with_name(f"{db.stem}-optuna{db.suffix or '.db'}"))))
        raise ValueError(
            f"tuning jobs need a file or server database for their studies; set BINWATCH_TUNING_STORAGE_URL "
            f"(the database URL {url.render_as_string(hide_password=True)} cannot hold them)"
        )

    @property
    def resolved_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{(self.home / 'broker.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
