"""access rules and approval requests

Revision ID: 0014
Revises: 0013

Per-role and per-person limits (models, image size, batch size) and the requests a manager
approves or declines.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "access_rules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("allowed_models", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("max_megapixels", sa.Numeric(6, 2), nullable=True),
        sa.Column("max_side", sa.Integer(), nullable=True),
        sa.Column("max_count", sa.Integer(), nullable=True),
        sa.Column("updated_by_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "(role IS NULL) <> (user_id IS NULL)", name=op.f("ck_access_rules_role_or_person")
        ),
        sa.CheckConstraint(
            "role IS NULL OR role IN ('member', 'manager')", name=op.f("ck_access_rules_role_valid")
        ),
        sa.CheckConstraint(
            "max_megapixels IS NULL OR max_megapixels > 0",
            name=op.f("ck_access_rules_megapixels_positive"),
        ),
        sa.CheckConstraint(
            "max_side IS NULL OR max_side > 0", name=op.f("ck_access_rules_side_positive")
        ),
        sa.CheckConstraint(
            "max_count IS NULL OR max_count > 0", name=op.f("ck_access_rules_count_positive")
        ),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["updated_by_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_access_rules_team_role",
        "access_rules",
        ["team_id", "role"],
        unique=True,
        postgresql_where=sa.text("user_id IS NULL"),
    )
    op.create_index(
        "uq_access_rules_team_user",
        "access_rules",
        ["team_id", "user_id"],
        unique=True,
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )
    op.create_table(
        "approval_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("estimated_credits", sa.Numeric(12, 4), nullable=False),
        sa.Column("refused_code", sa.String(length=40), nullable=False),
        sa.Column("refused_reason", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by_id", sa.Uuid(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("batch_id", sa.Uuid(), nullable=True),
        sa.Column("project_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'declined')",
            name=op.f("ck_approval_requests_status_valid"),
        ),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["decided_by_id"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_approval_requests_team_status",
        "approval_requests",
        ["team_id", "status", "created_at"],
    )
    op.create_index(
        "ix_approval_requests_team_user",
        "approval_requests",
        ["team_id", "user_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_approval_requests_team_user", table_name="approval_requests")
    op.drop_index("ix_approval_requests_team_status", table_name="approval_requests")
    op.drop_table("approval_requests")
    op.drop_index("uq_access_rules_team_user", table_name="access_rules")
    op.drop_index("uq_access_rules_team_role", table_name="access_rules")
    op.drop_table("access_rules")
