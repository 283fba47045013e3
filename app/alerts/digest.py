"""The weekly digest: each team's spend of the last 7 days, by person and by project, e-mailed
to its managers. Each grouping is one entry of `DIGEST_SECTIONS` (a title and a reader)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.alerts.models import Alert
from app.alerts.rules import fire, team_staff
from app.auth.models import Team
from app.costs.service import (
    Period,
    Scope,
    last_days,
    spend_by_person,
    spend_by_project,
    spend_total,
)


@dataclass(frozen=True)
class DigestRow:
    """One line of a section: who or what, credits and US dollars spent, charges counted."""

    name: str
    credits: Decimal
    usd: Decimal
    charges: int


SectionReader = Callable[[Session, uuid.UUID, Period], list[DigestRow]]


def _by_person(db: Session, team_id: uuid.UUID, period: Period) -> list[DigestRow]:
    return [
        DigestRow(f"{p.name} <{p.email}>", p.credits, p.usd, p.charges)
        for p in spend_by_person(db, Scope(team_id), period)
    ]


def _by_project(db: Session, team_id: uuid.UUID, period: Period) -> list[DigestRow]:
    return [
        DigestRow(p.name, p.credits, p.usd, p.charges)
        for p in spend_by_project(db, Scope(team_id), period)
    ]


#: The digest's sections in order: (title, reader).
DIGEST_SECTIONS: list[tuple[str, SectionReader]] = [
    ("By person", _by_person),
    ("By project", _by_project),
]


def digest_text(db: Session, team: Team, period: Period) -> str:
    """The digest e-mail's plain text for one team and period."""
    total = spend_total(db, Scope(team.id), period)
    lines = [
        f"Spend of {team.name}, {period.first_day.isoformat()} to {period.last_day.isoformat()}"
        " (UTC):",
        f"Total: {total.credits:.2f} credits (${total.usd:.2f}), {total.charges} charges.",
    ]
    for title, reader in DIGEST_SECTIONS:
        rows = reader(db, team.id, period)
        lines += ["", f"{title}:"]
        lines += [
            f"  {r.name}: {r.credits:.2f} credits (${r.usd:.2f}), {r.charges} charges" for r in rows
        ]
        if not rows:
            lines.append("  no spend")
    return "\n".join(lines) + "\n"


def queue_digests(db: Session, now: datetime) -> list[Alert]:
    """One digest per team and ISO week (the unique key: a second run that week adds none),
    addressed to the team's managers and admins; returns those to deliver after commit."""
    period = last_days(7, now)
    year, week, _ = now.astimezone(UTC).isocalendar()
    made: list[Alert] = []
    for team in db.scalars(select(Team)).all():
        staff = team_staff(db, team.id)
        if not staff:
            continue
        alert = fire(
            db,
            team_id=team.id,
            kind="digest",
            scope_type="team",
            scope_id="",
            period=f"{year}-W{week:02d}",
            threshold=0,
            title=f"Weekly spend digest: {team.name}",
            body=digest_text(db, team, period),
            details={"start": period.first_day.isoformat(), "end": period.last_day.isoformat()},
            recipients=staff,
            notices=False,
        )
        if alert is not None:
            made.append(alert)
    return made
