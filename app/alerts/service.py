"""What the alert tasks run: evaluate in one transaction, deliver after it commits."""

from __future__ import annotations

import uuid
from datetime import datetime

from app.alerts.delivery import deliver, redeliver
from app.alerts.digest import queue_digests
from app.alerts.rules import evaluate_all, evaluate_budgets
from app.db import session_scope, utcnow


def _deliver_all(alert_ids: list[uuid.UUID]) -> int:
    return sum(deliver(alert_id) for alert_id in alert_ids)


def run_evaluation(now: datetime | None = None) -> int:
    """Evaluate every rule for every team, commit the alerts that fired, then deliver them and
    any left undelivered earlier. Returns how many were delivered now."""
    # Earlier alerts left undelivered first, so a try that just failed is not repeated at once.
    redelivered = redeliver()
    with session_scope() as db:
        fired = [alert.id for alert in evaluate_all(db, now)]
    return redelivered + _deliver_all(fired)


def run_team_budgets(team_id: uuid.UUID, now: datetime | None = None) -> int:
    """Evaluate one team's budgets (after a charge), commit, deliver; how many delivered."""
    with session_scope() as db:
        fired = [alert.id for alert in evaluate_budgets(db, team_id, now)]
    return _deliver_all(fired)


def run_weekly_digest(now: datetime | None = None) -> int:
    """Queue this week's digest of every team (once a week each) and e-mail them."""
    with session_scope() as db:
        made = [alert.id for alert in queue_digests(db, now or utcnow())]
    return _deliver_all(made)
