"""bfl account state: outages and rate limits, shared by every worker

Revision ID: 0003
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bfl_account_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outage_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outage_reason", sa.Text(), nullable=True),
        sa.Column("next_probe_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("probe_failures", sa.Integer(), nullable=False),
        sa.Column("rate_limited_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_rate_limit_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active_at_rate_limit", sa.Integer(), nullable=True),
        sa.Column("learned_cap", sa.Integer(), nullable=True),
        sa.Column("learned_cap_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rate_limit_headers", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_bfl_account_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bfl_account_state")),
    )


def downgrade() -> None:
    op.drop_table("bfl_account_state")
