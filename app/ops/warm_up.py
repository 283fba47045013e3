"""Connections a process opens before its first piece of work."""

from __future__ import annotations

import logging

from sqlalchemy import text

log = logging.getLogger(__name__)


def connect_ahead(first: str) -> None:
    """Open one connection to PostgreSQL and one to the broker now, so that the process's first
    pieces of work (which tend to come all at once: a burst of webhook calls, a queued batch)
    do not each wait for them. A service that is down is only logged (naming ``first``, the
    kind of work that will connect instead: "request", "task"); nothing is raised.
    """
    from app.celery_app import app as celery
    from app.db import get_sessionmaker

    try:
        with get_sessionmaker()() as db:
            db.execute(text("SELECT 1"))
        with celery.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=1)
    except Exception as exc:
        log.warning(
            "could not connect ahead of the first %s (%s); it will connect then", first, exc
        )
