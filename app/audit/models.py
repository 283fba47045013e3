"""The audit log's one table: who did what, when, to what, with the values before and after."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, new_id


class AuditEntry(Base):
    """One admin or manager action. Rows are only ever inserted (see docs/architecture.md)."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_team_at", "team_id", "at"),
        Index("ix_audit_entries_team_action_at", "team_id", "action", "at"),
        # The audit page's person and target filters (migration 0020).
        Index("ix_audit_entries_team_actor_at", "team_id", "actor_id", "at"),
        Index("ix_audit_entries_team_target_at", "team_id", "target_id", "at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    #: No cascade: a team with a history keeps it (the append-only trigger refuses deletes).
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id"), nullable=False)
    #: Who acted: a plain id (no foreign key, so removing an account never rewrites history)
    #: and the e-mail address at the time.
    actor_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    actor_email: Mapped[str] = mapped_column(String(320), nullable=False)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    #: Dotted verb, e.g. "member.role_changed", "budget.set", "token.revoked".
    action: Mapped[str] = mapped_column(String(80), nullable=False)
    #: What was acted on: a kind ("user", "budget", "job"...) and its id or key.
    target_type: Mapped[str] = mapped_column(String(40), nullable=False)
    target_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
