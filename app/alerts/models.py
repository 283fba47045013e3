"""Fired alerts (one row per rule, scope, period and threshold) and the notices people read."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, new_id, utcnow


class Alert(Base):
    """One alert that fired: a threshold crossed on (scope_type, scope_id, period).

    The unique key makes each alert fire once per period and threshold however many
    evaluations race: the insert that loses finds the row there and does nothing.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint(
            "team_id",
            "kind",
            "scope_type",
            "scope_id",
            "period",
            "threshold",
            name="uq_alerts_once",
        ),
        Index("ix_alerts_undelivered", "created_at", postgresql_where="delivered_at IS NULL"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    #: "budget", "credit_runway", "job_failures" or "digest".
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    #: What the rule watches: "team", "person" (and later "project", "quota"...), "account".
    scope_type: Mapped[str] = mapped_column(String(40), nullable=False)
    #: The watched thing's id ("" when the scope is the team or the account itself).
    scope_id: Mapped[str] = mapped_column(String(200), nullable=False)
    #: The period it fires once in: "2026-11" (month), "2026-W48" (week), "2026-11-30" (day),
    #: "2026-11-30T05:30" (a burst window).
    period: Mapped[str] = mapped_column(String(40), nullable=False)
    #: The threshold crossed: a percent of a budget, days of credit left, failures counted.
    threshold: Mapped[int] = mapped_column(Integer, nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    #: Each channel's hand-over, so a retry never sends what already went out.
    emailed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Set once e-mail and webhook were both handed over (or are not configured).
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivery_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")


class Notice(Base):
    """An alert as one person's in-app notice (the bell in the nav); read once they mark it."""

    __tablename__ = "notices"
    __table_args__ = (Index("ix_notices_user_team_read", "user_id", "team_id", "read_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    alert_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False
    )
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    # Python-side default: notices made in one transaction keep the order they were made in
    # (the database's now() is the transaction's start, the same for all of them).
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), default=utcnow
    )
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
