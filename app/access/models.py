"""Access rules (which models, how large, how many, per role or person) and approval requests."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, Numeric, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Timestamped, new_id


class AccessRule(Timestamped, Base):
    """A team's limits for one role (`member`, `manager`) or one person; NULL means no limit.

    A person's own rule wins over their role's, field by field. Per-person monthly credit
    quotas are the person's budget in `app.costs` (the same reservations hold them).
    """

    __tablename__ = "access_rules"
    __table_args__ = (
        CheckConstraint("(role IS NULL) <> (user_id IS NULL)", name="role_or_person"),
        CheckConstraint("role IS NULL OR role IN ('member', 'manager')", name="role_valid"),
        CheckConstraint("max_megapixels IS NULL OR max_megapixels > 0", name="megapixels_positive"),
        CheckConstraint("max_side IS NULL OR max_side > 0", name="side_positive"),
        CheckConstraint("max_count IS NULL OR max_count > 0", name="count_positive"),
        Index(
            "uq_access_rules_team_role",
            "team_id",
            "role",
            unique=True,
            postgresql_where=text("user_id IS NULL"),
        ),
        Index(
            "uq_access_rules_team_user",
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
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    #: Model names this role or person may use; NULL: every model.
    allowed_models: Mapped[list[str] | None] = mapped_column(JSONB, nullable=True)
    #: Most output megapixels (width x height / 1,000,000) of one image.
    max_megapixels: Mapped[Decimal | None] = mapped_column(Numeric(6, 2), nullable=True)
    #: Longest side of one image, in pixels.
    max_side: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Most images in one request (count).
    max_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )


class ApprovalStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"


class ApprovalRequest(Timestamped, Base):
    """A refused request kept with its full parameters until a manager approves or declines it.

    Approving creates its jobs once: the decision is a guarded UPDATE from `pending`.
    """

    __tablename__ = "approval_requests"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'approved', 'declined')", name="status_valid"),
        Index("ix_approval_requests_team_status", "team_id", "status", "created_at"),
        Index("ix_approval_requests_team_user", "team_id", "user_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    #: The validated request fields (prompt included; references as `stored:<key>`).
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False)
    #: Credits the whole request is estimated to cost.
    estimated_credits: Mapped[Decimal] = mapped_column(Numeric(12, 4), nullable=False)
    #: Why the request was refused: the refusal's code and its message.
    refused_code: Mapped[str] = mapped_column(String(40), nullable=False)
    refused_reason: Mapped[str] = mapped_column(String(500), nullable=False)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, default=ApprovalStatus.PENDING.value
    )
    decided_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    note: Mapped[str | None] = mapped_column(String(500), nullable=True)
    #: The team's project the jobs are paid from (None: the requester's last used one).
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), nullable=True
    )
    #: The batch the approval created.
    batch_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
