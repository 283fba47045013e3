"""alerts and notices

Revision ID: 0020
Revises: 0015

Alerts that fired (each once per scope, period and threshold: a unique key, so racing
evaluations cannot fire twice), the in-app notices people read, and indexes for the audit
page's person and target filters.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("scope_type", sa.String(length=40), nullable=False),
        sa.Column("scope_id", sa.String(length=200), nullable=False),
        sa.Column("period", sa.String(length=40), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("emailed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivery_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "team_id",
            "kind",
            "scope_type",
            "scope_id",
            "period",
            "threshold",
            name="uq_alerts_once",
        ),
    )
    op.create_index(
        "ix_alerts_undelivered",
        "alerts",
        ["created_at"],
        postgresql_where=sa.text("delivered_at IS NULL"),
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_notices_user_team_read", "notices", ["user_id", "team_id", "read_at"])
    # The audit page's person and target filters.
    op.create_index(
        "ix_audit_entries_team_actor_at", "audit_entries", ["team_id", "actor_id", "at"]
    )
    op.create_index(
        "ix_audit_entries_team_target_at", "audit_entries", ["team_id", "target_id", "at"]
    )


def downgrade() -> None:
    op.drop_index("ix_audit_entries_team_target_at", table_name="audit_entries")
    op.drop_index("ix_audit_entries_team_actor_at", table_name="audit_entries")
    op.drop_index("ix_notices_user_team_read", table_name="notices")
    op.drop_table("notices")
    op.drop_index("ix_alerts_undelivered", table_name="alerts")
    op.drop_table("alerts")
