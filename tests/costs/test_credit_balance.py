"""The credit balance: read from BFL (the emulator here), stored, and how long it lasts."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.bfl.client import BFLClient
from app.bfl.errors import AuthFailed, BFLError
from app.costs.models import CreditBalance
from app.costs.service import credit_outlook, refresh_credit_balance
from app.db import utcnow
from app.embedded import free_port
from app.emulator import EmulatorConfig, EmulatorServer
from tests.costs.factories import make_charge
from tests.factories import make_person
from tests.pipeline_support import BeatProcess, WorkerProcess, pipeline_env, wait_until


def test_refresh_stores_the_balance_bfl_reports(db: Session) -> None:
    config = EmulatorConfig(credits=Decimal("1234.5"), latency_mean_s=0.05)
    with (
        EmulatorServer(config) as emulator,
        BFLClient(emulator.base_url, "test-key", allow_insecure_urls=True) as client,
    ):
        first = refresh_credit_balance(db, client)
        emulator.configure(credits=Decimal("999"))
        second = refresh_credit_balance(db, client)
    assert first.credits == Decimal("1234.5")
    assert second.credits == Decimal("999")
    assert second.checked_at >= first.checked_at
    outlook = credit_outlook(db)
    assert outlook.balance == Decimal("999")
    assert outlook.checked_at == second.checked_at


def test_a_failed_read_stores_nothing(db: Session) -> None:
    config = EmulatorConfig(api_key="the-right-key", latency_mean_s=0.05)
    with (
        EmulatorServer(config) as emulator,
        BFLClient(emulator.base_url, "a-wrong-key", allow_insecure_urls=True) as client,
        pytest.raises(AuthFailed),
    ):
        refresh_credit_balance(db, client)
    with (
        BFLClient(f"http://127.0.0.1:{free_port()}", "k", allow_insecure_urls=True) as client,
        pytest.raises(BFLError),
    ):
        refresh_credit_balance(db, client)
    assert db.scalar(select(func.count()).select_from(CreditBalance)) == 0


def test_days_left_at_the_last_seven_days_rate(db: Session) -> None:
    now = utcnow()
    first = make_person(db)
    other_team = make_person(db)
    # 70 credits in the last 7 days, across the account's teams: 10 a day.
    make_charge(db, first, "40", at=now - timedelta(days=1))
    make_charge(db, other_team, "30", at=now - timedelta(days=6))
    make_charge(db, first, "500", at=now - timedelta(days=8))  # outside the window
    db.add(CreditBalance(credits=Decimal("1000"), checked_at=now - timedelta(hours=2)))
    db.add(CreditBalance(credits=Decimal("5000"), checked_at=now - timedelta(days=2)))
    db.flush()
    outlook = credit_outlook(db, now=now)
    assert outlook.balance == Decimal("1000")
    assert outlook.daily_rate == Decimal("10.00")
    assert outlook.days_left == Decimal("100.0")


def test_no_spend_means_no_estimate(db: Session) -> None:
    db.add(CreditBalance(credits=Decimal("50"), checked_at=utcnow()))
    db.flush()
    outlook = credit_outlook(db)
    assert outlook.daily_rate == 0 and outlook.days_left is None


def test_no_reading_yet(db: Session) -> None:
    outlook = credit_outlook(db)
    assert outlook.balance is None and outlook.checked_at is None


def test_the_balance_is_read_as_soon_as_beat_starts(committed_db: Session, tmp_path: Path) -> None:
    """Real beat and worker processes: a reading within seconds, not one interval later."""
    assert committed_db.scalar(select(func.count()).select_from(CreditBalance)) == 0
    config = EmulatorConfig(credits=Decimal("4321.5"), latency_mean_s=0.05)
    with EmulatorServer(config) as emulator:
        # The default interval (5 minutes): only the refresh at start can arrive in time.
        env = pipeline_env(emulator, CREDIT_REFRESH_INTERVAL_S="300", DATA_DIR=str(tmp_path))
        with WorkerProcess(env, concurrency=1), BeatProcess(env):
            started = time.monotonic()
            wait_until(
                lambda: committed_db.scalar(select(func.count()).select_from(CreditBalance)),
                timeout=30,
                message="a credit balance reading after start",
            )
            took = time.monotonic() - started
    committed_db.expire_all()
    outlook = credit_outlook(committed_db)
    assert outlook.balance == Decimal("4321.5")
    assert took < 30
