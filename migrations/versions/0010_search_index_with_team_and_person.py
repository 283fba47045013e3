"""search index with team and person (btree_gin)

Revision ID: 0010
Revises: 0001

The GIN index on prompt_tsv alone returned every team's matches for a word, and each had to be
read from the table to learn its team. With btree_gin the team and person are keys of the
same GIN index, so a search reads only rows of the asking team (or of the chosen person)
however common the word is elsewhere.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # btree_gin ships with PostgreSQL (contrib) and is a trusted extension: a database owner
    # may create it without being a superuser.
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.create_index(
        "ix_jobs_team_search",
        "jobs",
        ["team_id", "user_id", "prompt_tsv"],
        unique=False,
        postgresql_using="gin",
    )
    op.drop_index("ix_jobs_prompt_tsv", table_name="jobs", postgresql_using="gin")


def downgrade() -> None:
    op.create_index(
        "ix_jobs_prompt_tsv", "jobs", ["prompt_tsv"], unique=False, postgresql_using="gin"
    )
    op.drop_index("ix_jobs_team_search", table_name="jobs", postgresql_using="gin")
    op.execute("DROP EXTENSION IF EXISTS btree_gin")
