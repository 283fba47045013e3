"""Receives BFL's webhook calls and turns each into an immediate poll of the job.

The URL carries an HMAC token of the job id (`app.bfl.webhooks.sign_webhook_token`), so only
whoever was handed the URL can call it. The body is not trusted: it only says "look now", and
the job's outcome always comes from polling BFL. A webhook that never arrives is covered by
beat's check for overdue polls (app.jobs.sweeper.restart_overdue_polls).
"""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import JSONResponse

from app.bfl.webhooks import verify_webhook_token
from app.db import database_unavailable, session_scope
from app.jobs import messages, polling
from app.settings import get_settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/bfl/webhook", tags=["webhooks"], include_in_schema=False)


@router.post("/{job_id}/{token}", status_code=status.HTTP_202_ACCEPTED)
def bfl_webhook(job_id: str, token: str) -> JSONResponse:
    """Wake the poller for this job; 404 for anything that is not one of our webhook URLs."""
    secret = get_settings().SECRET_KEY.get_secret_value()
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found") from None
    if not verify_webhook_token(secret, str(parsed), token):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")
    # One read: when a poll sent for the moment BFL finishes holds the job's lease (or the
    # job is done), the webhook's poll would do nothing, so it is not sent. The poll task
    # checks again, so a repeated webhook is harmless either way.
    try:
        with session_scope() as db:
            needed = polling.webhook_poll_needed(db, parsed)
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        # PostgreSQL is away: BFL's call is still taken and its poll sent, as before the read
        # existed; the poll finishes the job once PostgreSQL is back (and beat's overdue check
        # polls it if that message is lost). BFL is not told to call again for our outage.
        log.warning("database unavailable; sending the poll for BFL's call on job %s", parsed)
        needed = True
    if needed:
        messages.send_now([messages.poll_message(parsed, force=True)])
    return JSONResponse({"accepted": True}, status_code=status.HTTP_202_ACCEPTED)
