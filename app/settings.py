"""The studio's one settings object, read from environment variables and an optional .env file."""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.bfl.catalogue import ACCOUNT_ACTIVE_TASK_CAP, BFL_DOMAIN

#: Key the studio presents to its own emulator; the emulator accepts any non-empty key by default.
EMULATOR_KEY = "emulator-local-key"
#: SECRET_KEY's built-in value: public, so `studio up` replaces it and the production commands
#: refuse to run with it (whoever knows it can forge this studio's webhook tokens).
DEV_SECRET_KEY = "dev-only-change-me"  # noqa: S105 (public on purpose)


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
    BFL_ALLOWED_HOSTS: str = Field(
        default=BFL_DOMAIN,
        description="Comma-separated hosts (each with its subdomains) besides BFL_API_URL's "
        "that may receive the API key as a polling_url; any other polling_url is not followed.",
    )
    BFL_MAX_ACTIVE_TASKS: int = Field(
        default=ACCOUNT_ACTIVE_TASK_CAP,
        ge=1,
        description="Account-wide cap on jobs submitting + pending at BFL (BFL's own cap by "
        "default; lower it to leave room for other users of the key).",
    )
    BFL_TIMEOUT_S: float = Field(default=30.0, gt=0, description="Read timeout for BFL calls.")
    BFL_CONNECT_TIMEOUT_S: float = Field(default=5.0, gt=0, description="Connect timeout.")
    CREDIT_PRICE_USD: Decimal = Field(
        default=Decimal("0.01"), description="US dollars per BFL credit, for cost reports."
    )
    COST_REVIEW_MAX_DAYS: int = Field(
        default=400,
        ge=1,
        description="The longest date range (days) one cost review may cover.",
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
        default=SecretStr(DEV_SECRET_KEY),
        description="Signs webhook tokens and CSRF tokens; set a long random value in production "
        "(`studio up` keeps a generated one in DATA_DIR/secret_key).",
    )
    PUBLIC_URL: str | None = Field(
        default=None,
        description="The studio's public https URL; when set, BFL webhooks finish jobs at once "
        "and invite links are built from it.",
    )
    LOCAL_URL: str | None = Field(
        default=None,
        description="Set by `studio up` for its children: the local address invite links use "
        "when PUBLIC_URL is unset (never used for webhooks).",
    )
    COOKIE_SECURE: bool = Field(
        default=True, description="Mark session cookies Secure (__Host- prefix); keep on."
    )
    SESSION_IDLE_MINUTES: int = Field(default=120, ge=1, description="Idle session timeout.")
    SESSION_MAX_HOURS: int = Field(default=24 * 7, ge=1, description="Absolute session lifetime.")
    LOGIN_FREE_ATTEMPTS_ACCOUNT: int = Field(
        default=5,
        ge=1,
        description="Failed sign-ins for one account from one client address before delays "
        "begin (the owner signing in from elsewhere is never slowed by them).",
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
    TRUSTED_PROXIES: str = Field(
        default="",
        description="Comma-separated addresses or CIDRs of reverse proxies whose "
        "X-Forwarded-For is believed; empty: the direct peer is the client.",
    )
    INVITE_MAX_ATTEMPTS: int = Field(
        default=10,
        ge=1,
        description="Refused tries to accept one invite link before the link stops working.",
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

    # Request size limits: enforced while a body streams in, before anything parses it.
    MAX_REQUEST_BYTES: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body (JSON or form) in bytes, except where a job is queued.",
    )
    MAX_JOB_REQUEST_BYTES: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Largest body of POST /api/v1/jobs and POST /generate (references "
        "included) in bytes.",
    )
    MAX_REFERENCE_IMAGE_BYTES: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Largest reference image file in bytes."
    )
    MAX_REFERENCE_IMAGE_PIXELS: int = Field(
        default=40_000_000,
        ge=1,
        description="Most pixels (width x height, read from the file's header) a reference "
        "image may declare.",
    )
    MAX_FORM_FIELDS: int = Field(
        default=200, ge=1, description="Most non-file fields one form post may carry."
    )
    MAX_FORM_FIELD_BYTES: int = Field(
        default=256 * 1024, ge=1024, description="Largest single non-file form field in bytes."
    )
    MAX_BULK_IMAGES: int = Field(
        default=5000,
        ge=1,
        description="Most images one bulk action (board, favourite, delete, ZIP) may touch.",
    )

    # Pipeline tuning.
    POLL_MIN_INTERVAL_S: float = Field(
        default=0.5,
        gt=0,
        description="First poll delay (for a model whose run time is not known yet).",
    )
    POLL_MAX_INTERVAL_S: float = Field(default=5.0, gt=0, description="Longest poll delay.")
    JOB_MAX_PENDING_S: int = Field(
        default=900, ge=10, description="A job pending longer than this fails as timed out."
    )
    SUBMITTING_STALE_S: int = Field(
        default=120, ge=5, description="A job in submitting this long is reconciled."
    )
    SWEEP_INTERVAL_S: float = Field(default=15.0, gt=0, description="How often the sweeper runs.")
    ANSWER_DB_RETRY_MINUTES: float = Field(
        default=10.0,
        ge=0,
        le=60,
        description="How long a worker keeps retrying to write an accepted BFL answer to an "
        "unavailable PostgreSQL; afterwards the sweeper applies the answer kept in Redis.",
    )
    QUEUE_DEADLINE_S: int = Field(
        default=6 * 3600,
        ge=60,
        description="A job not sent to BFL within this long after it was queued fails "
        "(never sent, never charged); outages and rate limits are waited out until then.",
    )
    BFL_RETRY_AFTER_MAX_S: float = Field(
        default=60.0,
        gt=0,
        le=120,
        description="Longest pause a 429's Retry-After (or X-RateLimit-Reset) may impose.",
    )
    BFL_PROBE_MAX_INTERVAL_S: float = Field(
        default=5.0,
        ge=0.5,
        le=60,
        description="Longest wait between probes of BFL during an outage (the back-off's cap).",
    )
    BFL_CAP_RAISE_AFTER_S: float = Field(
        default=60.0,
        gt=0,
        description="After this long without a 429, a cap learned from BFL's 429s rises by one.",
    )
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

    # Alerts: when they fire and where they go (README, "Alerts").
    ALERT_BUDGET_THRESHOLDS: str = Field(
        default="80,100",
        description="Percents of any budget at which an alert fires (once per month each), "
        "comma-separated.",
    )
    ALERT_CREDIT_RUNWAY_DAYS: int = Field(
        default=7,
        ge=0,
        description="Alert when the BFL credit balance runs out within this many days at the "
        "last 7 days' rate (once a day); 0 turns it off.",
    )
    ALERT_FAILURE_BURST_COUNT: int = Field(
        default=10,
        ge=0,
        description="Alert when a team has this many failed jobs within "
        "ALERT_FAILURE_BURST_MINUTES; 0 turns it off.",
    )
    ALERT_FAILURE_BURST_MINUTES: int = Field(
        default=15, ge=1, le=1440, description="The window failed jobs are counted in."
    )
    ALERT_EVALUATE_INTERVAL_S: float = Field(
        default=300.0, ge=10, description="How often beat evaluates every alert rule."
    )
    DIGEST_WEEKDAY: int = Field(
        default=1, ge=0, le=6, description="Day of the weekly spend digest (0 Sunday .. 6)."
    )
    DIGEST_HOUR_UTC: int = Field(
        default=8, ge=0, le=23, description="UTC hour of the weekly spend digest."
    )
    SMTP_HOST: str | None = Field(
        default=None, description="Mail server for alert and digest e-mail; unset: no e-mail."
    )
    SMTP_PORT: int = Field(default=587, ge=1, le=65535, description="Mail server port.")
    SMTP_FROM: str = Field(
        default="studio@localhost", description="Sender address of alert and digest e-mail."
    )
    SMTP_TLS: Literal["starttls", "ssl", "none"] = Field(
        default="starttls",
        description="starttls (upgrade after connecting), ssl (TLS from the start) or none.",
    )
    SMTP_USERNAME: str | None = Field(default=None, description="Mail server user, if any.")
    SMTP_PASSWORD: SecretStr | None = Field(default=None, description="Mail server password.")
    SMTP_TIMEOUT_S: float = Field(default=10.0, gt=0, description="Mail server timeout.")
    ALERT_WEBHOOK_URL: str | None = Field(
        default=None,
        description="Where alerts are POSTed as signed JSON (Slack-compatible `text`); unset: "
        "no webhook.",
    )
    ALERT_WEBHOOK_SECRET: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key of the webhook's X-Studio-Signature header.",
    )

    @field_validator("ALERT_BUDGET_THRESHOLDS")
    @classmethod
    def _percent_list(cls, value: str) -> str:
        parse_percents(value)
        return value

    @property
    def alert_budget_thresholds(self) -> list[int]:
        """ALERT_BUDGET_THRESHOLDS as whole percents, lowest first."""
        return parse_percents(self.ALERT_BUDGET_THRESHOLDS)

    @field_validator("BFL_ALLOWED_HOSTS")
    @classmethod
    def _plain_host_names(cls, value: str) -> str:
        for entry in _split_hosts(value):
            if not _HOST_RE.fullmatch(entry):
                raise ValueError(
                    f"BFL_ALLOWED_HOSTS entry {entry!r} is not a host name: list bare host "
                    "names separated by commas (e.g. bfl.ai,bfl.example.com), no scheme, "
                    "port or path"
                )
        return value

    @property
    def bfl_allowed_hosts(self) -> list[str]:
        """Hosts besides the API host that may receive the key (each with its subdomains):
        BFL_ALLOWED_HOSTS plus BFL_API_URL's host."""
        hosts = _split_hosts(self.BFL_ALLOWED_HOSTS)
        api_host = urlsplit(self.BFL_API_URL).hostname
        if api_host:
            hosts.append(api_host.lower())
        return list(dict.fromkeys(hosts))

    @field_validator("TRUSTED_PROXIES")
    @classmethod
    def _proxies_are_networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @property
    def trusted_proxies(self) -> tuple[IPNetwork, ...]:
        """TRUSTED_PROXIES as networks (a single address is a /32 or /128)."""
        return parse_networks(self.TRUSTED_PROXIES)

    @property
    def uses_dev_secret_key(self) -> bool:
        """True while SECRET_KEY is the public built-in value."""
        return self.SECRET_KEY.get_secret_value() == DEV_SECRET_KEY

    @property
    def link_base_url(self) -> str | None:
        """Base URL for links the studio hands out (invites): PUBLIC_URL, else the local
        address `studio up` runs at; None when neither is known."""
        base = self.PUBLIC_URL or self.LOCAL_URL
        return base.rstrip("/") if base else None

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


#: A DNS name or an IPv4 address, optionally written `*.example.com` or `.example.com`.
_HOST_RE = re.compile(r"(\*\.|\.)?[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*\.?")


def parse_percents(value: str) -> list[int]:
    """ "80,100" as [80, 100]; ValueError naming the setting for anything else."""
    try:
        percents = sorted({int(part) for part in value.split(",") if part.strip()})
    except ValueError:
        percents = []
    if not percents or any(p < 1 or p > 1000 for p in percents):
        raise ValueError(
            f"ALERT_BUDGET_THRESHOLDS {value!r} is not a list of percents: give whole numbers "
            "from 1 to 1000 separated by commas (e.g. 80,100)"
        )
    return percents


def _split_hosts(value: str) -> list[str]:
    return [part.strip().lower() for part in value.split(",") if part.strip()]


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """Comma- or space-separated addresses/CIDRs as networks; ValueError naming a bad entry."""
    networks: list[IPNetwork] = []
    for entry in value.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"TRUSTED_PROXIES: {entry!r} is not an address or CIDR "
                "(write e.g. 172.31.250.10 or 10.0.0.0/8, comma-separated)"
            ) from None
    return tuple(networks)


def normalize_database_url(url: str) -> str:
    """Use the psycopg 3 driver whatever scheme spelling the URL came with."""
    for prefix in ("postgresql+psycopg://", "postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
