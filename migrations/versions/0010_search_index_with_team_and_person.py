"""search index with team and person

Revision ID: 0010
Revises: 0003

The GIN index on prompt_tsv alone returned every team's matches for a word, and each had to be
read from the table to learn its team. Team and person are now keys of the same GIN index, as
one-element arrays (built-in array_ops: no extension, which the embedded PostgreSQL lacks), so
a search reads only rows of the asking team (or of the chosen person) however common the word
is elsewhere.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_team_search",
        "jobs",
        [sa.text("(ARRAY[team_id])"), sa.text("(ARRAY[user_id])"), "prompt_tsv"],
        unique=False,
        postgresql_using="gin",
    )
    op.drop_index("ix_jobs_prompt_tsv", table_name="jobs", postgresql_using="gin")


def downgrade() -> None:
    op.create_index(
        "ix_jobs_prompt_tsv", "jobs", ["prompt_tsv"], unique=False, postgresql_using="gin"
    )
    op.drop_index("ix_jobs_team_search", table_name="jobs", postgresql_using="gin")
