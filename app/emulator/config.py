"""Settings of the BFL emulator: latencies, limits, credits and failure modes (env EMULATOR_*)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.bfl.catalogue import ACCOUNT_ACTIVE_TASK_CAP, DEFAULT_CREDIT_PRICE_USD


class EmulatorConfig(BaseSettings):
    """How the emulator behaves. Read from EMULATOR_* variables; PATCH /_emulator/config
    changes it at runtime."""

    model_config = SettingsConfigDict(env_prefix="EMULATOR_", extra="forbid")

    api_key: str | None = Field(
        default=None, description="Only this x-key is accepted; unset: any non-empty key."
    )
    polling_base_url: str | None = Field(
        default=None,
        description="Base of the polling_url handed out; unset: the submit host with "
        "127.0.0.1 and localhost swapped, under /regional.",
    )
    latency_mean_s: float = Field(default=2.0, ge=0, description="Mean time to finish a task.")
    latency_jitter_s: float = Field(
        default=0.5, ge=0, description="Latency is drawn uniformly within mean ± jitter."
    )
    slow_factor: float = Field(default=10.0, ge=1, description="Latency multiplier of [[slow]].")
    random_seed: int | None = Field(
        default=None, description="Seeds latencies and random image seeds, for repeatable runs."
    )
    result_ttl_s: float = Field(
        default=600.0, gt=0, description="How long a result's image link works after Ready."
    )
    task_ttl_s: float = Field(
        default=1800.0, gt=0, description="How long get_result knows a finished task."
    )
    account_active_task_cap: int = Field(
        default=ACCOUNT_ACTIVE_TASK_CAP, ge=1, description="Active tasks per account."
    )
    model_task_caps: dict[str, int] = Field(
        default_factory=dict, description="Per-model caps overriding the catalogue's."
    )
    credits: Decimal = Field(
        default=Decimal("1000000"), ge=0, description="Starting credit balance."
    )
    credit_price_usd: Decimal = Field(
        default=DEFAULT_CREDIT_PRICE_USD, gt=0, description="US dollars per credit."
    )
    error_rate_5xx: float = Field(
        default=0.0, ge=0, le=1, description="Share of submissions answered 500 (no task made)."
    )
    poll_error_rate_5xx: float = Field(
        default=0.0, ge=0, le=1, description="Share of polls answered 503."
    )
    moderation_reasons: list[str] = Field(
        default_factory=lambda: ["Derivative Works Filter"],
        description="What a moderated task reports in details['Moderation Reasons'].",
    )
    unavailable: bool = Field(
        default=False,
        description="Every BFL endpoint answers 503 Service Unavailable (an outage that still "
        "answers); nothing is created.",
    )
    retry_after_s: float | None = Field(
        default=None,
        ge=0,
        description="Retry-After of a 429 in seconds; unset: until the earliest active task ends.",
    )
    retry_after_format: Literal["seconds", "http-date", "none"] = Field(
        default="seconds",
        description="How a 429 states Retry-After: delta-seconds, an HTTP-date, or not at all.",
    )
    rate_limit_body: Literal["detail", "error"] = Field(
        default="detail",
        description='Body of a 429: FastAPI\'s {"detail": ...}, or {"error": '
        '"rate_limit_exceeded", "message": ..., "retry_after": n} as in BFL\'s guide.',
    )
    rate_limit_headers: bool = Field(
        default=False,
        description="Send X-RateLimit-Limit/-Remaining/-Reset on submission answers.",
    )
    drop_mode: Literal["close", "hang"] = Field(
        default="close",
        description="[[drop]]: close the connection mid-answer, or hang for drop_hang_s first.",
    )
    drop_hang_s: float = Field(default=60.0, ge=0, description="How long [[drop]] hangs.")
    answer_delay_s: float = Field(
        default=0.0,
        ge=0,
        description="Hold back each accepted submission's answer this long after the task "
        "exists (a slow link or a busy BFL); the task runs meanwhile.",
    )
    delivery_content_type: str | None = Field(
        default=None, description="Serve result links with this Content-Type (failure tests)."
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="Timeout of webhook calls.")
