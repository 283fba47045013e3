"""queue control

Revision ID: 0015
Revises: 0011

Jobs can be paused and moved to the front or back of the line; a team's whole queue can be
paused by a manager.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "jobs",
        sa.Column("queue_front", sa.Boolean(), server_default="false", nullable=False),
    )
    op.add_column("jobs", sa.Column("queue_key", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "team_queue_pauses",
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paused_by_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["paused_by_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("team_id"),
    )


def downgrade() -> None:
    op.drop_table("team_queue_pauses")
    op.drop_column("jobs", "queue_key")
    op.drop_column("jobs", "queue_front")
    op.drop_column("jobs", "paused_at")
