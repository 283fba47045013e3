"""The credit ledger, monthly budgets, budget reservations and the account's credit balance."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Timestamped, new_id


class Charge(Timestamped, Base):
    """One ledger row per job BFL charged: the credits it reported, never written twice."""

    __tablename__ = "charges"
    __table_args__ = (
        # Dashboard and budget sums read a team's (or a person's) month; INCLUDE lets Postgres
        # answer them from the index alone.
        Index(
            "ix_charges_team_created",
            "team_id",
            "created_at",
            postgresql_include=["credits", "user_id", "model"],
        ),
        Index(
            "ix_charges_team_user_created",
            "team_id",
            "user_id",
            "created_at",
            postgresql_include=["credits"],
        ),
        # Spend of one project (budgets, reports filtered by project).
        Index(
            "ix_charges_team_project_created",
            "team_id",
            "project_id",
            "created_at",
            postgresql_include=["credits"],
        ),
        # Ledger export filtered by model.
        Index("ix_charges_team_model_created", "team_id", "model", "created_at"),
        # The account-wide burn rate behind "days of credit left" spans every team.
        Index("ix_charges_created", "created_at", postgresql_include=["credits"]),
        CheckConstraint("credits >= 0", name="credits_non_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="RESTRICT"), nullable=False, unique=True
    )
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="RESTRICT"), nullable=False
    )
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    credits: Mapped[Decimal] = mapped_column(Numeric(12, 4), nullable=False)
    usd: Mapped[Decimal] = mapped_column(Numeric(12, 4), nullable=False)


class ChargeOutcome(Base):
    """Charges per UTC day (of the charge), project, person, model and the job's present
    state: the ledger joined with the jobs' states, kept as it changes. `record_charge` adds
    a charge under the job's state then; `on_job_terminal` moves it to the state the job
    reaches, in the transaction of that change. The dashboard's per-model "ready images" and
    per-outcome figures read it instead of joining `jobs` for every charge."""

    __tablename__ = "charge_outcomes"
    __table_args__ = (CheckConstraint("charges >= 0", name="charges_non_negative"),)

    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    credits: Mapped[Decimal] = mapped_column(Numeric(14, 4), nullable=False)
    charges: Mapped[int] = mapped_column(Integer, nullable=False)


class ChargePromptMonth(Base):
    """Charges per calendar month (UTC), project, person and prompt (keyed by the prompt's
    MD5): the "most expensive prompts" of a month read a row per prompt, not per charge.
    Written with each ledger row (`record_charge`, same transaction)."""

    __tablename__ = "charge_prompt_months"
    __table_args__ = (
        Index(
            "ix_charge_prompt_months_team_month",
            "team_id",
            "month",
            postgresql_include=["credits", "charges", "last_charged_at"],
        ),
    )

    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    #: The first day of the month.
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    prompt_md5: Mapped[str] = mapped_column(String(32), primary_key=True)
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    credits: Mapped[Decimal] = mapped_column(Numeric(14, 4), nullable=False)
    charges: Mapped[int] = mapped_column(Integer, nullable=False)
    last_charged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ReservationState(enum.StrEnum):
    HELD = "held"
    SETTLED = "settled"
    RELEASED = "released"


class Reservation(Timestamped, Base):
    """Budget held for a job from submission until BFL reports its cost or it never reaches BFL."""

    __tablename__ = "reservations"
    __table_args__ = (
        CheckConstraint("state IN ('held', 'settled', 'released')", name="state_valid"),
        Index(
            "ix_reservations_held",
            "team_id",
            "user_id",
            postgresql_where=text("state = 'held'"),
        ),
        Index(
            "ix_reservations_held_project",
            "team_id",
            "project_id",
            postgresql_where=text("state = 'held'"),
        ),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="RESTRICT"), nullable=False
    )
    credits: Mapped[Decimal] = mapped_column(Numeric(12, 4), nullable=False)
    state: Mapped[str] = mapped_column(
        String(16), nullable=False, default=ReservationState.HELD.value
    )
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Budget(Timestamped, Base):
    """A monthly credit limit for a whole team (user_id and project_id NULL), one person in it
    (user_id set) or one of its projects (project_id set)."""

    __tablename__ = "budgets"
    __table_args__ = (
        CheckConstraint("monthly_credits >= 0", name="non_negative"),
        CheckConstraint("user_id IS NULL OR project_id IS NULL", name="one_scope"),
        Index(
            "uq_budgets_team",
            "team_id",
            unique=True,
            postgresql_where=text("user_id IS NULL AND project_id IS NULL"),
        ),
        Index(
            "uq_budgets_team_project",
            "team_id",
            "project_id",
            unique=True,
            postgresql_where=text("project_id IS NOT NULL"),
        ),
        Index(
            "uq_budgets_team_user",
            "team_id",
            "user_id",
            unique=True,
            postgresql_where=text("user_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE")
    )
    monthly_credits: Mapped[Decimal] = mapped_column(Numeric(12, 4), nullable=False)
    updated_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )


class CreditBalance(Base):
    """The BFL account's credit balance as last read from GET /v1/credits."""

    __tablename__ = "credit_balances"
    __table_args__ = (Index("ix_credit_balances_checked", "checked_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    credits: Mapped[Decimal] = mapped_column(Numeric(14, 4), nullable=False)
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
