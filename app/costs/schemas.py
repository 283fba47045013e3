"""Shapes of cost reports, shared by the dashboard pages and the JSON API (and its OpenAPI)."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from app.timestamps import UtcDatetime

BudgetState = Literal["ok", "warning", "exhausted"]


class Money(BaseModel):
    """An amount of BFL credits and what it costs in US dollars at CREDIT_PRICE_USD."""

    credits: Decimal
    usd: Decimal


class PeriodOut(BaseModel):
    """A reporting window in UTC: `start` inclusive, `end` exclusive."""

    label: str
    start: UtcDatetime
    end: UtcDatetime


class SpendTotal(Money):
    charges: int = Field(description="Ledger rows (one per job BFL charged).")


class PersonSpend(Money):
    user_id: uuid.UUID
    name: str
    email: str
    charges: int


class ModelSpend(Money):
    model: str
    charges: int
    ready_images: int = Field(description="Charged jobs that delivered an image.")
    avg_credits_per_job: Decimal = Field(description="Average charge of one job of this model.")
    credits_per_ready_image: Decimal | None = Field(
        description="All credits of this model divided by the images it delivered "
        "(failed and moderated jobs included); null when none was delivered."
    )


class ProjectSpend(Money):
    project_id: uuid.UUID
    name: str
    archived: bool
    charges: int


class DaySpend(Money):
    day: date
    charges: int


class PromptSpend(Money):
    prompt: str
    charges: int
    last_used_at: UtcDatetime


class OutcomeSpend(Money):
    status: str = Field(description="The job's state: ready, failed, moderated, cancelled...")
    charges: int


class CostSummary(BaseModel):
    """Everything the cost dashboard shows for one window; `by_person` is empty for members."""

    period: PeriodOut
    scope: Literal["team", "person"]
    user_id: uuid.UUID | None = Field(description="Whose figures these are; null: whole team.")
    project_id: uuid.UUID | None = Field(
        default=None, description="Only this project's figures; null: every project."
    )
    total: SpendTotal
    by_person: list[PersonSpend]
    by_project: list[ProjectSpend] = Field(default_factory=list)
    by_model: list[ModelSpend]
    by_day: list[DaySpend]
    top_prompts: list[PromptSpend]
    by_outcome: list[OutcomeSpend]
    lost: Money = Field(description="What failed, moderated and cancelled jobs cost.")


class CreditOutlook(BaseModel):
    """The BFL account's balance (from the last GET /v1/credits) and how long it lasts."""

    balance: Decimal | None
    checked_at: UtcDatetime | None
    daily_rate: Decimal = Field(description="Credits per day over the last 7 days, account-wide.")
    days_left: Decimal | None = Field(description="balance / daily_rate; null when no spend.")


class BudgetLine(BaseModel):
    """One monthly budget and how much of it this month has used or holds."""

    scope: Literal["team", "person", "project"]
    user_id: uuid.UUID | None
    project_id: uuid.UUID | None = Field(default=None, description="Set for a project budget.")
    name: str
    monthly_credits: Decimal
    spent: Decimal = Field(description="Credits charged this month.")
    held: Decimal = Field(description="Credits reserved for jobs not yet charged.")
    remaining: Decimal
    percent_used: Decimal
    state: BudgetState


class MySpend(BaseModel):
    """One person's own spend, budgets and what is left for them this month."""

    user_id: uuid.UUID
    this_month: SpendTotal
    last_30_days: SpendTotal
    held: Decimal
    personal_budget: BudgetLine | None
    team_budget_remaining: Decimal | None = Field(
        description="What the team budget still allows, if the team has one."
    )
    remaining: Decimal | None = Field(
        description="What this person may still spend this month; null: no budget applies."
    )
    limited_by: Literal["person", "team", "project"] | None
    percent_used: Decimal | None
    state: BudgetState


class LedgerRow(BaseModel):
    id: uuid.UUID
    charged_at: UtcDatetime
    job_id: uuid.UUID
    user_id: uuid.UUID
    person: str
    project_id: uuid.UUID | None = Field(default=None, description="The charge's project.")
    project: str = Field(default="", description="The project's name.")
    model: str
    credits: Decimal
    usd: Decimal
    job_status: str
    prompt: str


class LedgerPage(BaseModel):
    """Ledger rows of a date range, and totals over the whole filtered range (all pages)."""

    start: date
    end: date
    user_id: uuid.UUID | None
    project_id: uuid.UUID | None = None
    model: str | None
    total: SpendTotal
    by_project: list[ProjectSpend] = Field(
        default_factory=list, description="Totals per project over the whole filtered range."
    )
    rows: list[LedgerRow]
    next_offset: int | None


class BudgetIn(BaseModel):
    """Set (or, with monthly_credits null, remove) the team's, one person's or one project's
    monthly budget (give at most one of user_id and project_id)."""

    user_id: uuid.UUID | None = Field(default=None, description="null: the whole team's budget.")
    project_id: uuid.UUID | None = Field(default=None, description="A project's budget.")
    monthly_credits: Decimal | None = Field(
        default=None, ge=0, le=Decimal("99999999"), decimal_places=4
    )

    @model_validator(mode="after")
    def _one_scope(self) -> BudgetIn:
        if self.user_id is not None and self.project_id is not None:
            raise ValueError(
                "give user_id (a person's budget) or project_id (a project's budget), not both"
            )
        return self


class DayPoint(BaseModel):
    """Credits charged on one UTC day."""

    day: date
    credits: Decimal


class Trend(BaseModel):
    """One project's or model's spend over the range, the previous range, and its daily series."""

    key: str = Field(description="The project's id or the model's name.")
    name: str
    credits: Decimal
    previous_credits: Decimal
    change_percent: Decimal | None = Field(description="Null when the previous range had none.")
    daily: list[DayPoint] = Field(description="One point per day of the range, zeros included.")


class Forecast(BaseModel):
    """Burn rate over the range and where it leads by the end of this month."""

    scope: Literal["team", "person", "project"]
    project_id: uuid.UUID | None
    name: str
    daily_rate: Decimal = Field(description="Credits per day over the range.")
    month_to_date: Decimal = Field(description="Credits charged this calendar month so far.")
    projected_month_end: Decimal = Field(
        description="month_to_date + daily_rate x the days left in this month (today included)."
    )
    monthly_budget: Decimal | None
    days_until_budget_runs_out: Decimal | None = Field(
        description="What is left of the budget / daily_rate; 0 when it is used up; null with "
        "no budget or no spend."
    )


class CostReview(BaseModel):
    """Spend over any date range, compared with the range of the same length just before it."""

    period: PeriodOut
    previous_period: PeriodOut
    scope: Literal["team", "person"]
    user_id: uuid.UUID | None
    project_id: uuid.UUID | None
    total: Money
    previous_total: Money
    change_percent: Decimal | None
    by_project: list[Trend]
    by_model: list[Trend]
    forecasts: list[Forecast]
