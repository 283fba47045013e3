"""Celery task entry points for alerts: beat's evaluation, the post-charge check, the digest."""

from __future__ import annotations

import uuid

from app.alerts import EVALUATE_ALERTS_TASK, EVALUATE_TEAM_TASK, WEEKLY_DIGEST_TASK
from app.alerts.service import run_evaluation, run_team_budgets, run_weekly_digest
from app.celery_app import app


@app.task(name=EVALUATE_ALERTS_TASK)
def evaluate_alerts() -> int:
    """Every alert rule for every team; repeating it fires nothing twice (unique key)."""
    return run_evaluation()


@app.task(name=EVALUATE_TEAM_TASK)
def evaluate_team(team_id: str) -> int:
    """One team's budget thresholds, right after one of its charges was committed."""
    return run_team_budgets(uuid.UUID(team_id))


@app.task(name=WEEKLY_DIGEST_TASK)
def weekly_digest() -> int:
    """The weekly spend digest of every team (once per ISO week each)."""
    return run_weekly_digest()
