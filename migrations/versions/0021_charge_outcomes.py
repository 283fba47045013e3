"""charge outcomes

Revision ID: 0021
Revises: 0020

The ledger summed per day, project, person, model and the job's present state, so the cost
dashboard's outcome and "ready images" figures no longer join every job of the period.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "charge_outcomes",
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("credits", sa.Numeric(precision=14, scale=4), nullable=False),
        sa.Column("charges", sa.Integer(), nullable=False),
        sa.CheckConstraint("charges >= 0", name=op.f("ck_charge_outcomes_charges_non_negative")),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_charge_outcomes_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_charge_outcomes_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_charge_outcomes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "team_id",
            "day",
            "project_id",
            "user_id",
            "model",
            "status",
            name=op.f("pk_charge_outcomes"),
        ),
    )
    op.execute(
        "INSERT INTO charge_outcomes "
        "(team_id, day, project_id, user_id, model, status, credits, charges) "
        "SELECT c.team_id, (c.created_at AT TIME ZONE 'UTC')::date, c.project_id, c.user_id, "
        "c.model, j.status, sum(c.credits), count(*) FROM charges c JOIN jobs j ON j.id = c.job_id "
        "GROUP BY 1, 2, 3, 4, 5, 6"
    )
    _prompt_months()


def _prompt_months() -> None:
    op.create_table(
        "charge_prompt_months",
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("prompt_md5", sa.String(length=32), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("credits", sa.Numeric(precision=14, scale=4), nullable=False),
        sa.Column("charges", sa.Integer(), nullable=False),
        sa.Column("last_charged_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_charge_prompt_months_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_charge_prompt_months_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_charge_prompt_months_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "team_id",
            "month",
            "project_id",
            "user_id",
            "prompt_md5",
            name=op.f("pk_charge_prompt_months"),
        ),
    )
    op.create_index(
        "ix_charge_prompt_months_team_month",
        "charge_prompt_months",
        ["team_id", "month"],
        postgresql_include=["credits", "charges", "last_charged_at"],
    )
    op.execute(
        "INSERT INTO charge_prompt_months (team_id, month, project_id, user_id, prompt_md5, "
        "prompt, credits, charges, last_charged_at) "
        "SELECT c.team_id, date_trunc('month', c.created_at AT TIME ZONE 'UTC')::date, "
        "c.project_id, c.user_id, md5(j.prompt), min(j.prompt), sum(c.credits), count(*), "
        "max(c.created_at) FROM charges c JOIN jobs j ON j.id = c.job_id "
        "GROUP BY 1, 2, 3, 4, 5"
    )


def downgrade() -> None:
    op.drop_index("ix_charge_prompt_months_team_month", table_name="charge_prompt_months")
    op.drop_table("charge_prompt_months")
    op.drop_table("charge_outcomes")
