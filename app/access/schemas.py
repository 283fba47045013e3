"""Shapes of access rules, quotas and approval requests, shared by the pages and the JSON API."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.timestamps import UtcDatetime

#: The longest side a rule may name, in pixels (more is a typo, not a cap).
MAX_RULE_SIDE = 65_536
#: The largest batch size a rule may name.
MAX_RULE_COUNT = 10_000


class AccessRuleIn(BaseModel):
    """A role's (`role`) or a person's (`user_id`) limits; every limit left out is no limit.

    Leaving every limit out removes the rule.
    """

    model_config = ConfigDict(extra="forbid")

    role: Literal["member", "manager"] | None = Field(
        default=None, description="member or manager (admins follow the managers' rule)."
    )
    user_id: uuid.UUID | None = Field(default=None, description="A person of the team.")
    allowed_models: list[str] | None = Field(
        default=None,
        max_length=64,
        description="Model names from GET /api/v1/models this role or person may use; "
        "null: every model.",
    )
    max_megapixels: Decimal | None = Field(
        default=None,
        gt=0,
        le=100,
        decimal_places=2,
        description="Most megapixels (1 MP = 1,048,576 pixels).",
    )
    max_side: int | None = Field(
        default=None, ge=1, le=MAX_RULE_SIDE, description="Longest image side, in pixels."
    )
    max_count: int | None = Field(
        default=None, ge=1, le=MAX_RULE_COUNT, description="Most images in one request."
    )


class AccessRuleOut(BaseModel):
    """One rule in force; null limits are no limit."""

    role: str | None
    user_id: uuid.UUID | None
    name: str | None = Field(description="The person's name, for a person's rule.")
    allowed_models: list[str] | None
    max_megapixels: Decimal | None
    max_side: int | None
    max_count: int | None


class QuotaIn(BaseModel):
    """A person's monthly credit quota (their monthly budget); null removes it."""

    model_config = ConfigDict(extra="forbid")

    user_id: uuid.UUID
    monthly_credits: Decimal | None = Field(
        default=None,
        ge=0,
        le=10_000_000,
        decimal_places=4,
        description="Credits per calendar month (UTC).",
    )


class QuotaOut(BaseModel):
    user_id: uuid.UUID
    monthly_credits: Decimal | None


class ModelAccessOut(BaseModel):
    """Whether the caller may use one model, and why not."""

    name: str
    available: bool
    reason: str | None = Field(description="Why the caller may not use it, and what to do.")


class CallerAccessOut(BaseModel):
    """The caller's own limits in this team (null: no limit beyond the catalogue's)."""

    role: Literal["member", "manager"] = Field(description="The rule the caller follows.")
    max_megapixels: Decimal | None
    max_side: int | None
    max_count: int | None
    models: list[ModelAccessOut]


class DecisionIn(BaseModel):
    """A manager's note on a decision, shown to the requester."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=500)


ApprovalState = Literal["pending", "approved", "declined"]


class ApprovalOut(BaseModel):
    """A request kept for approval, its estimated cost, why it was refused and its outcome."""

    id: uuid.UUID
    status: ApprovalState
    user_id: uuid.UUID = Field(description="Who asked.")
    requester: str
    model: str
    prompt: str
    count: int
    project_id: uuid.UUID | None = Field(
        description="The project the jobs are paid from (null: the requester's last used one)."
    )
    params: dict[str, object] = Field(description="The validated request fields.")
    estimated_credits: Decimal = Field(description="Estimated credits for the whole request.")
    refused_code: str = Field(description="budget_exceeded or access_limited.")
    refused_reason: str
    note: str | None
    decided_by_id: uuid.UUID | None
    decided_at: UtcDatetime | None
    created_at: UtcDatetime
    job_ids: list[uuid.UUID] = Field(description="The jobs an approval created.")
