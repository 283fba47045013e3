"""Celery task entry points for accounts: the periodic purge of ended sessions."""

from __future__ import annotations

import logging

from app.auth import PURGE_SESSIONS_TASK
from app.auth.service import purge_ended_sessions
from app.celery_app import app
from app.db import session_scope

log = logging.getLogger(__name__)


@app.task(name=PURGE_SESSIONS_TASK)
def purge_sessions() -> int:
    """Delete sessions past their idle or absolute timeout (beat runs this hourly).

    Timed-out sessions are already refused at sign-in checks; this only keeps the table from
    growing, so running it twice or late is harmless.
    """
    with session_scope() as db:
        purged = purge_ended_sessions(db)
    if purged:
        log.info("purged %d ended sessions", purged)
    return purged
