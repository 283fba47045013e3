"""When alerts fire: budget thresholds, the credit runway, failure bursts; each only once."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from app.alerts.models import Alert, Notice
from app.alerts.rules import evaluate_budgets, evaluate_failures, evaluate_runway, fire
from app.auth.models import Role
from app.costs.models import CreditBalance
from app.db import utcnow
from app.jobs.models import Job, JobStatus
from tests.costs.factories import make_budget, make_charge
from tests.factories import make_person


def _notices(db: Session, alert: Alert) -> set[uuid.UUID]:
    return set(db.scalars(select(Notice.user_id).where(Notice.alert_id == alert.id)))


def test_team_budget_fires_at_80_then_100_percent_once_each(db: Session) -> None:
    manager = make_person(db, role=Role.MANAGER)
    admin = make_person(db, manager.team, Role.ADMIN)
    member = make_person(db, manager.team)
    make_budget(db, manager, "100", personal=False)
    make_charge(db, member, "79")
    assert evaluate_budgets(db, manager.team.id) == []
    make_charge(db, member, "2")
    (at_80,) = evaluate_budgets(db, manager.team.id)
    assert (at_80.kind, at_80.scope_type, at_80.scope_id, at_80.threshold) == (
        "budget",
        "team",
        "",
        80,
    )
    assert at_80.period == utcnow().strftime("%Y-%m")
    assert Decimal(at_80.details["used_credits"]) == 81
    assert _notices(db, at_80) == {manager.user.id, admin.user.id}  # not the member
    assert evaluate_budgets(db, manager.team.id) == []  # once per period and threshold
    make_charge(db, member, "19")
    (at_100,) = evaluate_budgets(db, manager.team.id)
    assert at_100.threshold == 100 and "100%" in at_100.title
    assert evaluate_budgets(db, manager.team.id) == []


def test_a_personal_budget_tells_the_person_too_and_one_jump_speaks_once(db: Session) -> None:
    manager = make_person(db, role=Role.MANAGER)
    member = make_person(db, manager.team)
    make_budget(db, member, "10", personal=True)
    make_charge(db, member, "12")
    (alert,) = evaluate_budgets(db, manager.team.id)
    assert (alert.scope_type, alert.scope_id, alert.threshold) == (
        "person",
        str(member.user.id),
        100,
    )
    assert _notices(db, alert) == {manager.user.id, member.user.id}
    # 80 % was crossed in the same jump: recorded (never fires later), not sent.
    silent = db.scalars(select(Alert).where(Alert.threshold == 80)).one()
    assert silent.delivered_at is not None and _notices(db, silent) == set()


def test_racing_evaluations_fire_an_alert_once(committed_db: Session, engine: Engine) -> None:
    manager = make_person(committed_db, role=Role.MANAGER)
    committed_db.commit()
    barrier = threading.Barrier(4)
    results: list[bool] = []

    def one() -> None:
        with Session(engine) as db:
            barrier.wait()
            alert = fire(
                db,
                team_id=manager.team.id,
                kind="budget",
                scope_type="team",
                scope_id="",
                period="2026-11",
                threshold=80,
                title="t",
                body="b",
                details={},
                recipients=[manager.user.id],
            )
            db.commit()
            results.append(alert is not None)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False, False, False, True]
    assert committed_db.scalar(select(func.count()).select_from(Alert)) == 1
    assert committed_db.scalar(select(func.count()).select_from(Notice)) == 1


def test_credit_runway_fires_once_a_day_for_every_team(db: Session) -> None:
    first = make_person(db, role=Role.ADMIN)
    second = make_person(db, role=Role.MANAGER)
    make_charge(db, first, "70", at=utcnow() - timedelta(days=1))  # 10 credits a day
    db.add(CreditBalance(credits=Decimal("50"), checked_at=utcnow()))
    db.flush()
    fired = evaluate_runway(db)
    assert {a.team_id for a in fired} == {first.team.id, second.team.id}
    assert all(a.kind == "credit_runway" and a.threshold == 7 for a in fired)
    assert "5.0 days" in fired[0].title
    assert evaluate_runway(db) == []


def test_no_runway_alert_while_credits_last_long_enough(db: Session) -> None:
    person = make_person(db, role=Role.ADMIN)
    make_charge(db, person, "7", at=utcnow() - timedelta(days=1))  # 1 credit a day
    db.add(CreditBalance(credits=Decimal("50"), checked_at=utcnow()))
    db.flush()
    assert evaluate_runway(db) == []


def _failed(db: Session, team_id: uuid.UUID, user_id: uuid.UUID, minutes_ago: float) -> None:
    db.add(
        Job(
            id=uuid.uuid4(),
            team_id=team_id,
            user_id=user_id,
            status=JobStatus.FAILED.value,
            model="flux-2-pro",
            prompt="p",
            params={},
            width=1024,
            height=1024,
            estimated_credits=Decimal("3"),
            error_code="bfl_error",
            finished_at=utcnow() - timedelta(minutes=minutes_ago),
        )
    )
    db.flush()


def test_a_burst_of_failures_fires_once_per_window(db: Session, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from app.settings import get_settings

    monkeypatch.setenv("ALERT_FAILURE_BURST_COUNT", "3")
    monkeypatch.setenv("ALERT_FAILURE_BURST_MINUTES", "10")
    get_settings.cache_clear()
    try:
        manager = make_person(db, role=Role.MANAGER)
        quiet = make_person(db, role=Role.MANAGER)
        _failed(db, manager.team.id, manager.user.id, 30)  # outside the window
        _failed(db, manager.team.id, manager.user.id, 2)
        _failed(db, manager.team.id, manager.user.id, 1)
        _failed(db, quiet.team.id, quiet.user.id, 1)
        assert evaluate_failures(db) == []
        _failed(db, manager.team.id, manager.user.id, 0)
        now = utcnow()  # both evaluations in one window, whatever the clock says
        (alert,) = evaluate_failures(db, now)
        assert alert.team_id == manager.team.id and alert.details["failures"] == 3
        assert _notices(db, alert) == {manager.user.id}
        assert evaluate_failures(db, now) == []
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_a_project_budget_is_one_more_scope(db: Session) -> None:
    from app.costs.service import set_budget
    from app.projects.service import default_project

    manager = make_person(db, role=Role.MANAGER)
    general = default_project(db, team_id=manager.team.id)
    make_charge(db, manager, "9")  # charges land in the team's default project
    set_budget(
        db,
        team_id=manager.team.id,
        user_id=None,
        project_id=general.id,
        monthly_credits=Decimal("10"),
        set_by=manager.user.id,
    )
    (alert,) = evaluate_budgets(db, manager.team.id)
    assert (alert.scope_type, alert.scope_id, alert.threshold) == ("project", str(general.id), 80)
    assert general.name in alert.title
