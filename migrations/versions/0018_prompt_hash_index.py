"""prompt lookup index

Revision ID: 0018
Revises: 0015

A hash index on jobs.prompt: the prompt history finds every use of a page's prompts by the
prompt itself (equality only; a hash index takes prompts of any length, a B-tree does not).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_prompt_hash", "jobs", ["prompt"], postgresql_using="hash")


def downgrade() -> None:
    op.drop_index("ix_jobs_prompt_hash", table_name="jobs")
