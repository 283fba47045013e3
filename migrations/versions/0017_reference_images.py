"""reference images stored once and linked to jobs

Revision ID: 0017
Revises: 0015

Reference images get their own table (one row per team and sha256 of the normalised bytes)
and jobs point at theirs, in order, through job_references. Jobs made before keep working:
their inline base64 references are stored and replaced by storage keys, and stored keys get
their rows (app.jobs.references.adopt_legacy).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reference_images",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=False),
        sa.Column("thumb_key", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_reference_images_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_images")),
        sa.UniqueConstraint("team_id", "sha256", name="uq_reference_images_team_sha"),
    )
    op.create_table(
        "job_references",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("reference_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_references_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["reference_id"],
            ["reference_images.id"],
            name=op.f("fk_job_references_reference_id_reference_images"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("job_id", "position", name=op.f("pk_job_references")),
    )
    op.create_index("ix_job_references_reference", "job_references", ["reference_id"])
    _adopt_existing_references()


def _adopt_existing_references() -> None:
    from sqlalchemy.orm import Session

    from app.jobs.references import adopt_legacy

    session = Session(bind=op.get_bind())
    adopt_legacy(session)
    session.flush()


def downgrade() -> None:
    op.drop_index("ix_job_references_reference", table_name="job_references")
    op.drop_table("job_references")
    op.drop_table("reference_images")
