"""The one Settings object, read from the environment (prefix BINWATCH_) and an optional .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
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
    s3_region: str = "us-east-1"

    broker_url: str | None = Field(
        default=None,
        description="Celery broker. Default: kombu's SQLAlchemy transport on the SQLite file (no server). "
        "Production: redis://host:6379/0.",
    )

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1

    max_upload_bytes: int = Field(default=20 * 1024 * 1024, description="Largest accepted image upload.")
    max_image_pixels: int = Field(default=50_000_000, description="Larger images are rejected (bomb guard).")
    batch_max_size: int = Field(default=16, description="Most images one inference batch holds.")
    batch_max_wait_ms: float = Field(default=5.0, description="How long a batch waits to fill up.")
    batch_queue_size: int = Field(default=256, description="Pending images before requests get 503.")
    model_poll_seconds: float = Field(
        default=5.0, description="How often each API process checks for a newly promoted model."
    )

    # Verdict thresholds for bin checks (see docs/verdicts.md).
    match_threshold: float = Field(default=0.5, description="P(recorded count) at or above this: match.")
    mismatch_threshold: float = Field(default=0.1, description="P(recorded count) below this: mismatch.")

    worker_queues: str = "training"
    worker_concurrency: int = 1
    worker_pool: Literal["solo", "prefork", "threads"] = "solo"
    job_time_limit_seconds: int = 6 * 3600

    device: str = Field(default="auto", description="torch device for inference and training: auto, cpu, cuda.")
    log_level: str = "INFO"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'binwatch.db').resolve()}"

    @property
    def resolved_artifact_store(self) -> str:
        return self.artifact_store or str((self.home / "artifacts").resolve())

    @property
    def resolved_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{(self.home / 'broker.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
