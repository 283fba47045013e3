"""Delivering alerts: e-mail over SMTP (standard library) and a signed JSON webhook.

Firing is exactly once (a unique key); delivery is claimed with a guarded UPDATE, done after
the commit, and retried by beat until it succeeds (MAX_ATTEMPTS), so a crash between sending
and recording may send one alert twice but never loses it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.alerts.models import Alert
from app.auth.models import User
from app.db import session_scope, utcnow
from app.settings import get_settings

log = logging.getLogger(__name__)

#: Tries per alert before beat stops re-sending it.
MAX_ATTEMPTS = 5
#: Alerts older than this are not re-sent (their news is stale).
RETRY_WINDOW = timedelta(days=1)
SIGNATURE_HEADER = "X-Studio-Signature"
TIMESTAMP_HEADER = "X-Studio-Timestamp"


def send_email(to: Sequence[str], subject: str, text: str) -> bool:
    """Send a plain-text e-mail through SMTP_HOST; False when no mail server is configured.

    Raises smtplib.SMTPException or OSError when the server refuses or cannot be reached.
    """
    settings = get_settings()
    if not settings.SMTP_HOST or not to:
        return False
    message = EmailMessage()
    message["From"] = settings.SMTP_FROM
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message.set_content(text)
    connect = smtplib.SMTP_SSL if settings.SMTP_TLS == "ssl" else smtplib.SMTP
    with connect(settings.SMTP_HOST, settings.SMTP_PORT, timeout=settings.SMTP_TIMEOUT_S) as smtp:
        if settings.SMTP_TLS == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if settings.SMTP_USERNAME and settings.SMTP_PASSWORD:
            smtp.login(settings.SMTP_USERNAME, settings.SMTP_PASSWORD.get_secret_value())
        smtp.send_message(message)
    return True


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature: "v1=" + hex HMAC-SHA256 of "<timestamp>.<body>" under `secret`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """The JSON body: Slack-compatible `text`, plus the alert's structured fields."""
    details = {k: v for k, v in alert.details.items() if k != "recipients"}
    return {
        "text": f"*{alert.title}*\n{alert.body}",
        "alert": {
            "id": str(alert.id),
            "team_id": str(alert.team_id),
            "kind": alert.kind,
            "scope_type": alert.scope_type,
            "scope_id": alert.scope_id or None,
            "period": alert.period,
            "threshold": alert.threshold,
            "title": alert.title,
            "body": alert.body,
            "details": details,
            "created_at": alert.created_at.isoformat(),
        },
    }


def post_webhook(payload: dict[str, Any]) -> bool:
    """POST `payload` to ALERT_WEBHOOK_URL, signed with a timestamp; False when unset.

    Raises httpx.HTTPError when the receiver cannot be reached or answers with an error.
    """
    settings = get_settings()
    if not settings.ALERT_WEBHOOK_URL:
        return False
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {"content-type": "application/json", TIMESTAMP_HEADER: timestamp}
    if settings.ALERT_WEBHOOK_SECRET is not None:
        secret = settings.ALERT_WEBHOOK_SECRET.get_secret_value()
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    response = httpx.post(
        settings.ALERT_WEBHOOK_URL, content=body, headers=headers, timeout=settings.SMTP_TIMEOUT_S
    )
    response.raise_for_status()
    return True


def _claim(alert_id: uuid.UUID) -> Alert | None:
    """Take the alert for one delivery try (a guarded UPDATE), committed; None if delivered,
    out of tries, or taken by another worker a moment ago."""
    with session_scope() as db:
        claimed = db.scalar(
            update(Alert)
            .where(
                Alert.id == alert_id,
                Alert.delivered_at.is_(None),
                Alert.delivery_attempts < MAX_ATTEMPTS,
            )
            .values(delivery_attempts=Alert.delivery_attempts + 1)
            .returning(Alert)
        )
        if claimed is not None:
            db.expunge(claimed)
        return claimed


def _emails(db: Session, alert: Alert) -> list[str]:
    ids = [uuid.UUID(v) for v in alert.details.get("recipients", [])]
    if not ids:
        return []
    return list(db.scalars(select(User.email).where(User.id.in_(ids)).order_by(User.email)))


def deliver(alert_id: uuid.UUID) -> bool:
    """Send one alert by e-mail and webhook (digests by e-mail only); True when delivered.

    A failure is logged and left for beat's next run (`redeliver`).
    """
    alert = _claim(alert_id)
    if alert is None:
        return False
    try:
        if alert.emailed_at is None:
            with session_scope() as db:
                emails = _emails(db, alert)
            send_email(emails, alert.title, alert.body)
            _mark(alert.id, emailed_at=utcnow())
        if alert.posted_at is None and alert.kind != "digest":
            post_webhook(webhook_payload(alert))
            _mark(alert.id, posted_at=utcnow())
    except (smtplib.SMTPException, OSError, httpx.HTTPError) as exc:
        log.warning("alert %s not delivered (try %d): %s", alert.id, alert.delivery_attempts, exc)
        return False
    _mark(alert.id, delivered_at=utcnow())
    return True


def _mark(alert_id: uuid.UUID, **values: Any) -> None:
    """Record a channel's hand-over at once (its own transaction)."""
    with session_scope() as db:
        db.execute(update(Alert).where(Alert.id == alert_id).values(**values))


def redeliver() -> int:
    """Deliver alerts left undelivered (a failed try, a crash) from the last day; how many."""
    with session_scope() as db:
        due = list(
            db.scalars(
                select(Alert.id).where(
                    Alert.delivered_at.is_(None),
                    Alert.delivery_attempts < MAX_ATTEMPTS,
                    Alert.created_at > utcnow() - RETRY_WINDOW,
                )
            )
        )
    return sum(deliver(alert_id) for alert_id in due)
