"""projects

Revision ID: 0013
Revises: 0012

Projects (a team's cost centres): every job, charge and budget hold belongs to one. Each team
gets a default project, "General", and every job made before projects moves into it. Budgets
may also name a project; each person remembers the project they last used in a team; and a
daily rollup of the ledger (charge_days) serves the cost reports.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _projects() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("is_default", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("archived", sa.Boolean(), server_default="false", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_projects_team_id_teams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
    )
    op.create_index(
        "uq_projects_team_name",
        "projects",
        ["team_id", sa.literal_column("lower(name)")],
        unique=True,
    )
    op.create_index(
        "uq_projects_team_default",
        "projects",
        ["team_id"],
        unique=True,
        postgresql_where=sa.text("is_default"),
    )
    op.execute(
        "INSERT INTO projects (id, team_id, name, is_default) "
        "SELECT gen_random_uuid(), id, 'General', true FROM teams"
    )


def _project_column(table: str, *, ondelete: str = "RESTRICT") -> None:
    """Add `project_id` to `table`, filled with the team's default project, then NOT NULL."""
    op.add_column(table, sa.Column("project_id", sa.Uuid(), nullable=True))
    op.execute(
        f"UPDATE {table} t SET project_id = p.id FROM projects p "  # noqa: S608 - fixed names
        "WHERE p.team_id = t.team_id AND p.is_default"
    )
    op.alter_column(table, "project_id", nullable=False)
    op.create_foreign_key(
        f"fk_{table}_project_id_projects",
        table,
        "projects",
        ["project_id"],
        ["id"],
        ondelete=ondelete,
    )


def _charge_days() -> None:
    op.create_table(
        "charge_days",
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("credits", sa.Numeric(precision=14, scale=4), nullable=False),
        sa.Column("charges", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_charge_days_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_charge_days_team_id_teams"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_charge_days_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "team_id", "day", "project_id", "user_id", "model", name=op.f("pk_charge_days")
        ),
    )
    op.create_index(
        "ix_charge_days_team_project_day",
        "charge_days",
        ["team_id", "project_id", "day"],
        postgresql_include=["credits", "charges"],
    )
    op.execute(
        "INSERT INTO charge_days (team_id, day, project_id, user_id, model, credits, charges) "
        "SELECT team_id, (created_at AT TIME ZONE 'UTC')::date, project_id, user_id, model, "
        "sum(credits), count(*) FROM charges GROUP BY 1, 2, 3, 4, 5"
    )


def upgrade() -> None:
    _projects()
    _project_column("jobs")
    op.create_index(
        "ix_jobs_team_project_created",
        "jobs",
        ["team_id", "project_id", sa.text("created_at DESC")],
    )
    _project_column("charges")
    op.create_index(
        "ix_charges_team_project_created",
        "charges",
        ["team_id", "project_id", "created_at"],
        postgresql_include=["credits"],
    )
    _project_column("reservations")
    op.create_index(
        "ix_reservations_held_project",
        "reservations",
        ["team_id", "project_id"],
        postgresql_where=sa.text("state = 'held'"),
    )
    op.add_column("budgets", sa.Column("project_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        "fk_budgets_project_id_projects",
        "budgets",
        "projects",
        ["project_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_check_constraint(
        op.f("ck_budgets_one_scope"), "budgets", "user_id IS NULL OR project_id IS NULL"
    )
    op.drop_index("uq_budgets_team", table_name="budgets")
    op.create_index(
        "uq_budgets_team",
        "budgets",
        ["team_id"],
        unique=True,
        postgresql_where=sa.text("user_id IS NULL AND project_id IS NULL"),
    )
    op.create_index(
        "uq_budgets_team_project",
        "budgets",
        ["team_id", "project_id"],
        unique=True,
        postgresql_where=sa.text("project_id IS NOT NULL"),
    )
    op.add_column("memberships", sa.Column("last_project_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        "fk_memberships_last_project_id_projects",
        "memberships",
        "projects",
        ["last_project_id"],
        ["id"],
        ondelete="SET NULL",
    )
    _charge_days()


def downgrade() -> None:
    op.drop_index("ix_charge_days_team_project_day", table_name="charge_days")
    op.drop_table("charge_days")
    op.drop_constraint("fk_memberships_last_project_id_projects", "memberships", type_="foreignkey")
    op.drop_column("memberships", "last_project_id")
    op.drop_index("uq_budgets_team_project", table_name="budgets")
    op.drop_index("uq_budgets_team", table_name="budgets")
    op.execute("DELETE FROM budgets WHERE project_id IS NOT NULL")
    op.create_index(
        "uq_budgets_team",
        "budgets",
        ["team_id"],
        unique=True,
        postgresql_where=sa.text("user_id IS NULL"),
    )
    op.drop_constraint(op.f("ck_budgets_one_scope"), "budgets", type_="check")
    op.drop_constraint("fk_budgets_project_id_projects", "budgets", type_="foreignkey")
    op.drop_column("budgets", "project_id")
    op.drop_index("ix_reservations_held_project", table_name="reservations")
    op.drop_column("reservations", "project_id")
    op.drop_index("ix_charges_team_project_created", table_name="charges")
    op.drop_column("charges", "project_id")
    op.drop_index("ix_jobs_team_project_created", table_name="jobs")
    op.drop_column("jobs", "project_id")
    op.drop_index("uq_projects_team_default", table_name="projects")
    op.drop_index("uq_projects_team_name", table_name="projects")
    op.drop_table("projects")
