"""The job's cost column: written here for the ledger, which must equal the jobs' costs.

Kept apart from app/jobs/service.py and state.py (which use the costs feature) so that the
costs feature can call it without an import circle.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.jobs.models import Job


def cost_or_estimate(db: Session, job: Job) -> Decimal:
    """The job's cost in credits: the one BFL reported, else its estimate, which is then
    written to `jobs.cost_credits` (once; a cost already there is never replaced)."""
    if job.cost_credits is not None:
        return Decimal(job.cost_credits)
    credits = Decimal(job.estimated_credits or 0)
    db.execute(
        update(Job).where(Job.id == job.id, Job.cost_credits.is_(None)).values(cost_credits=credits)
    )
    set_committed_value(job, "cost_credits", credits)
    return credits


__all__ = ["cost_or_estimate"]
