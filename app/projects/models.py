"""A team's projects (cost centres) and the daily spend rollup the cost reports read."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    func,
    literal_column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Timestamped, new_id

#: The name of the project every team starts with (and every job made before projects).
DEFAULT_PROJECT_NAME = "General"
#: The longest project name, in characters.
PROJECT_NAME_MAX_CHARS = 80


class Project(Timestamped, Base):
    """A cost centre of one team. Names are unique in a team, whatever their case; an archived
    project keeps its jobs and charges but takes no new jobs. One project per team is its
    default: it cannot be archived."""

    __tablename__ = "projects"
    __table_args__ = (
        Index(
            "uq_projects_team_name",
            "team_id",
            func.lower(literal_column("name")),
            unique=True,
        ),
        Index(
            "uq_projects_team_default", "team_id", unique=True, postgresql_where=text("is_default")
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(PROJECT_NAME_MAX_CHARS), nullable=False)
    is_default: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default="false"
    )
    archived: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default="false"
    )


class ChargeDay(Base):
    """Credits charged per UTC day, project, person and model of a team: the ledger summed as
    it is written (`app.costs.service.record_charge`, same transaction), so reports over a
    month read a few hundred rows instead of every charge."""

    __tablename__ = "charge_days"
    __table_args__ = (
        Index(
            "ix_charge_days_team_project_day",
            "team_id",
            "project_id",
            "day",
            postgresql_include=["credits", "charges"],
        ),
    )

    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    credits: Mapped[Decimal] = mapped_column(Numeric(14, 4), nullable=False)
    charges: Mapped[int] = mapped_column(Integer, nullable=False)
