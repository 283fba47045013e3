"""bfl task id name

Revision ID: 0011
Revises: 0010

BFL's task id had three names in the code; the column now carries the one name used everywhere,
`bfl_task_id`.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("jobs", "bfl_id", new_column_name="bfl_task_id")


def downgrade() -> None:
    op.alter_column("jobs", "bfl_task_id", new_column_name="bfl_id")
