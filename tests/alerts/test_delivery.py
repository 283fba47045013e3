"""Alerts reach people: an e-mail read back from a real SMTP server, a webhook whose signature
a real HTTP server verifies, and a weekly digest; failures are tried again."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.alerts.models import Alert
from app.alerts.service import run_evaluation, run_weekly_digest
from app.auth.models import Role
from app.db import utcnow
from tests.alerts.conftest import WEBHOOK_SECRET, Hook, Mailbox
from tests.costs.factories import make_budget, make_charge
from tests.factories import Person, make_person


def _team_over_budget(db: Session) -> tuple[Person, Person, Person]:
    manager = make_person(db, role=Role.MANAGER, email="mona.manager@example.com")
    admin = make_person(db, manager.team, Role.ADMIN, email="ada.admin@example.com")
    member = make_person(db, manager.team, email="max.member@example.com")
    make_budget(db, manager, "100", personal=False)
    make_charge(db, member, "85")
    db.commit()
    return manager, admin, member


def test_a_budget_alert_is_emailed_and_posted_signed(
    committed_db: Session, mailbox: Mailbox, webhook: Hook
) -> None:
    manager, admin, _ = _team_over_budget(committed_db)
    assert run_evaluation() == 1

    (message,) = mailbox.messages
    assert sorted(mailbox.recipients[0]) == [admin.user.email, manager.user.email]
    assert message["From"] == "alerts@studio.test"
    assert message["Subject"] == "The team's budget is at 85% (80% reached)"
    assert "85.00 of 100.00 credits" in message.get_payload(decode=True).decode()

    ((headers, body),) = webhook.calls
    assert headers["content-type"] == "application/json"
    timestamp = headers["x-studio-timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    expected = hmac.new(
        WEBHOOK_SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(headers["x-studio-signature"], f"v1={expected}")
    payload = json.loads(body)
    assert payload["text"].startswith("*The team's budget is at 85%")
    assert payload["alert"]["kind"] == "budget" and payload["alert"]["threshold"] == 80
    assert payload["alert"]["team_id"] == str(manager.team.id)
    assert payload["alert"]["details"]["percent"] == "85.0"
    assert "recipients" not in payload["alert"]["details"]

    # Evaluated again: nothing new fires and nothing is sent twice.
    assert run_evaluation() == 0
    assert len(mailbox.messages) == 1 and len(webhook.calls) == 1
    alert = committed_db.scalars(select(Alert)).one()
    committed_db.refresh(alert)
    assert alert.delivered_at is not None and alert.delivery_attempts == 1


def test_a_failed_delivery_is_tried_again_by_the_next_evaluation(
    committed_db: Session, mailbox: Mailbox, webhook: Hook
) -> None:
    _team_over_budget(committed_db)
    webhook.status = 500
    assert run_evaluation() == 0
    alert = committed_db.scalars(select(Alert)).one()
    committed_db.refresh(alert)
    assert alert.delivered_at is None and alert.delivery_attempts == 1
    webhook.status = 200
    assert run_evaluation() == 1
    committed_db.refresh(alert)
    assert alert.delivered_at is not None and alert.delivery_attempts == 2
    assert len(webhook.calls) == 2
    assert len(mailbox.messages) == 1  # the e-mail went out the first time: not sent again


def test_the_weekly_digest_lists_spend_per_person_once_a_week(
    committed_db: Session, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = make_person(committed_db, role=Role.MANAGER, email="mona.manager@example.com")
    ann = make_person(committed_db, manager.team, email="ann@example.com")
    bob = make_person(committed_db, manager.team, email="bob@example.com")
    make_charge(committed_db, ann, "12.5")
    make_charge(committed_db, ann, "3")
    make_charge(committed_db, bob, "4")
    make_charge(committed_db, bob, "99", at=utcnow() - timedelta(days=20))  # older than a week
    other = make_person(committed_db, role=Role.ADMIN, email="other.admin@example.com")
    make_charge(committed_db, other, "1")
    committed_db.commit()

    assert run_weekly_digest() == 2  # one per team
    by_recipient = {tuple(r): m for r, m in zip(mailbox.recipients, mailbox.messages, strict=True)}
    message = by_recipient[(manager.user.email,)]
    text = message.get_payload(decode=True).decode()
    assert message["Subject"].startswith("Weekly spend digest")
    assert "Total: 19.50 credits" in text
    assert f"{ann.user.name} <ann@example.com>: 15.50 credits ($0.16), 2 charges" in text
    assert f"{bob.user.name} <bob@example.com>: 4.00 credits ($0.04), 1 charges" in text
    assert "other.admin" not in text and "99" not in text
    by_project = text[text.index("By project:") :]
    assert "19.50 credits" in by_project  # every charge went to the team's default project
    assert run_weekly_digest() == 0  # once per ISO week
    assert len(mailbox.messages) == 2
