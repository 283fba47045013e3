"""The studio's one settings object, read from environment variables and an optional .env file."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Key the studio presents to its own emulator; the emulator accepts any non-empty key by default.
EMULATOR_KEY = "emulator-local-key"


class Settings(BaseSettings):
    """Every setting of the studio. The README's configuration table mirrors this class."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Services. Unset means: `studio up` starts an embedded one under DATA_DIR.
    DATABASE_URL: str | None = Field(
        default=None, description="PostgreSQL URL (postgresql+psycopg://...); unset: embedded."
    )
    REDIS_URL: str | None = Field(
        default=None, description="Redis URL for the Celery broker; unset: embedded."
    )
    DATA_DIR: Path = Field(
        default=Path("var"), description="Folder for embedded PostgreSQL/Redis data and media."
    )

    # BFL.
    BFL_API_KEY: SecretStr | None = Field(
        default=None, description="BFL API key; unset: the studio uses its BFL emulator."
    )
    BFL_API_URL: str = Field(
        default="https://api.bfl.ai", description="BFL base URL (global, EU or US host)."
    )
    BFL_MAX_ACTIVE_TASKS: int = Field(
        default=24, ge=1, description="Account-wide cap on jobs submitting + pending at BFL."
    )
    BFL_TIMEOUT_S: float = Field(default=30.0, gt=0, description="Read timeout for BFL calls.")
    BFL_CONNECT_TIMEOUT_S: float = Field(default=5.0, gt=0, description="Connect timeout.")
    CREDIT_PRICE_USD: Decimal = Field(
        default=Decimal("0.01"), description="US dollars per BFL credit, for cost reports."
    )
    CREDIT_REFRESH_INTERVAL_S: float = Field(
        default=300.0,
        ge=10,
        description="How often beat reads the BFL account's credit balance (GET /v1/credits).",
    )
    EMULATOR_URL: str = Field(
        default="http://127.0.0.1:8765",
        description="Where the BFL emulator listens when no BFL_API_KEY is set.",
    )

    # Storage of originals and thumbnails.
    MEDIA_BACKEND: Literal["local", "s3"] = Field(
        default="local", description="Where images are kept: a local folder or S3."
    )
    MEDIA_ROOT: Path | None = Field(
        default=None, description="Folder for images with the local backend (DATA_DIR/media)."
    )
    S3_ENDPOINT_URL: str | None = Field(default=None, description="S3-compatible endpoint.")
    S3_BUCKET: str = Field(default="flux-studio", description="Bucket for images.")
    S3_REGION: str = Field(default="us-east-1", description="S3 region.")
    S3_ACCESS_KEY_ID: str | None = Field(default=None, description="S3 access key id.")
    S3_SECRET_ACCESS_KEY: SecretStr | None = Field(default=None, description="S3 secret key.")

    # Web.
    SECRET_KEY: SecretStr = Field(
        default=SecretStr("dev-only-change-me"),
        description="Signs webhook tokens and CSRF tokens; set a long random value in production.",
    )
    PUBLIC_URL: str | None = Field(
        default=None,
        description="The studio's public https URL; when set, BFL webhooks finish jobs at once.",
    )
    COOKIE_SECURE: bool = Field(
        default=True, description="Mark session cookies Secure (__Host- prefix); keep on."
    )
    FORWARDED_ALLOW_IPS: str = Field(
        default="127.0.0.1",
        description="Load balancers whose X-Forwarded-For/-Proto the web app believes "
        "(comma-separated addresses or networks, * for any); one on another host must be "
        "listed, or every client has its address.",
    )
    SESSION_IDLE_MINUTES: int = Field(default=120, ge=1, description="Idle session timeout.")
    SESSION_MAX_HOURS: int = Field(default=24 * 7, ge=1, description="Absolute session lifetime.")
    LOGIN_FREE_ATTEMPTS_ACCOUNT: int = Field(
        default=5, ge=1, description="Failed sign-ins per account before delays begin."
    )
    LOGIN_FREE_ATTEMPTS_ADDRESS: int = Field(
        default=30, ge=1, description="Failed sign-ins per client address before delays begin."
    )
    LOGIN_DELAY_BASE_S: float = Field(
        default=2.0, gt=0, description="First sign-in delay after the free attempts; doubles."
    )
    LOGIN_DELAY_MAX_S: float = Field(
        default=900.0, gt=0, description="Longest sign-in delay (no hard lock-out)."
    )
    METRICS_TOKEN: SecretStr | None = Field(
        default=None, description="Bearer token for /metrics; unset: loopback clients only."
    )
    WORKER_METRICS_PORT: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port where each worker serves /metrics for its own processes; 0: off "
        "(on one host the web app's /metrics already counts the workers).",
    )
    LOG_LEVEL: str = Field(default="INFO", description="Log level.")
    LOG_FORMAT: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: readable on a terminal, JSON otherwise."
    )
    API_RATE_LIMIT_PER_MINUTE: int = Field(
        default=120,
        ge=0,
        description="Requests per minute one API token may make; 0 turns the limit off.",
    )

    # Pipeline tuning.
    POLL_MIN_INTERVAL_S: float = Field(default=0.5, gt=0, description="First poll delay.")
    POLL_MAX_INTERVAL_S: float = Field(default=5.0, gt=0, description="Longest poll delay.")
    JOB_MAX_PENDING_S: int = Field(
        default=900, ge=10, description="A job pending longer than this fails as timed out."
    )
    SUBMITTING_STALE_S: int = Field(
        default=120, ge=5, description="A job in submitting this long is reconciled."
    )
    SWEEP_INTERVAL_S: float = Field(default=15.0, gt=0, description="How often the sweeper runs.")
    CELERY_KEY_PREFIX: str = Field(
        default="", description="Prefix for Celery's Redis keys, so studios can share a Redis."
    )
    WORKER_CONCURRENCY: int = Field(default=4, ge=1, description="Processes per worker.")
    MAX_BATCH_SIZE: int = Field(
        default=16, ge=1, le=200, description="Most images one request may ask for at once."
    )
    POLL_LEASE_S: float = Field(
        default=60.0,
        ge=2,
        description="How long a poll (and download) may run before the sweeper assumes its "
        "worker died and polls the job again; keep above POLL_MAX_INTERVAL_S.",
    )

    @property
    def bfl_emulated(self) -> bool:
        """True when no BFL key is configured and the studio talks to its emulator."""
        return self.BFL_API_KEY is None or not self.BFL_API_KEY.get_secret_value()

    @property
    def bfl_base_url(self) -> str:
        return self.EMULATOR_URL if self.bfl_emulated else self.BFL_API_URL

    @property
    def bfl_key(self) -> str:
        if self.bfl_emulated:
            return EMULATOR_KEY
        assert self.BFL_API_KEY is not None
        return self.BFL_API_KEY.get_secret_value()

    @property
    def media_root(self) -> Path:
        return self.MEDIA_ROOT or self.DATA_DIR / "media"

    @property
    def database_url(self) -> str:
        if not self.DATABASE_URL:
            raise RuntimeError(
                "DATABASE_URL is not set; run `studio up` to start an embedded PostgreSQL, "
                "or set DATABASE_URL=postgresql+psycopg://user@host/db"
            )
        return normalize_database_url(self.DATABASE_URL)

    @property
    def redis_url(self) -> str:
        if not self.REDIS_URL:
            raise RuntimeError(
                "REDIS_URL is not set; run `studio up` to start an embedded Redis, "
                "or set REDIS_URL=redis://host:6379/0"
            )
        return self.REDIS_URL


def normalize_database_url(url: str) -> str:
    """Use the psycopg 3 driver whatever scheme spelling the URL came with."""
    for prefix in ("postgresql+psycopg://", "postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
