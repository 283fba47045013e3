"""Celery task entry points for the JSON API: the periodic purge of old Idempotency-Keys."""

from __future__ import annotations

import logging

from app.api.idempotency import PURGE_KEYS_TASK, purge_expired_keys
from app.celery_app import app
from app.db import session_scope

log = logging.getLogger(__name__)


@app.task(name=PURGE_KEYS_TASK)
def purge_idempotency_keys() -> int:
    """Delete Idempotency-Key records past their keeping time (beat runs this hourly)."""
    with session_scope() as db:
        purged = purge_expired_keys(db)
    if purged:
        log.info("forgot %d idempotency keys", purged)
    return purged
