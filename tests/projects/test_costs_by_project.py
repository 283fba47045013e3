"""Spend by project in the dashboard, the ledger and its exports; the cost review of any range
with its comparison, daily trends and burn-rate forecasts."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.costs.review import cost_review, review_period
from app.costs.service import Scope, set_budget
from app.db import utcnow
from app.projects.service import Changer, create_project, default_project
from tests.costs.factories import make_charge
from tests.factories import Person, make_person
from tests.signed_in import SignIn

NOW = datetime(2026, 6, 20, 12, 0, tzinfo=UTC)


def _changer(person: Person) -> Changer:
    return Changer(team_id=person.team.id, user_id=person.user.id, email=person.user.email)


def _day(n: int) -> datetime:
    return datetime(2026, 6, n, 10, 0, tzinfo=UTC)


def test_the_review_compares_ranges_and_gives_daily_trends_and_forecasts(db: Session) -> None:
    boss = make_person(db, role=Role.MANAGER)
    client_a = create_project(db, _changer(boss), name="Client A")
    general = default_project(db, team_id=boss.team.id)
    # Previous range (June 1-10): 20 credits in Client A. This range (June 11-20): 50 in
    # Client A over two days, 10 in General; 5 more in May don't count anywhere.
    make_charge(db, boss, "20", at=_day(5), project_id=client_a.id)
    make_charge(db, boss, "30", at=_day(12), project_id=client_a.id)
    make_charge(db, boss, "20", at=_day(20), project_id=client_a.id, model="flux-2-flex")
    make_charge(db, boss, "10", at=_day(15))
    make_charge(db, boss, "5", at=datetime(2026, 5, 31, 23, 0, tzinfo=UTC))
    set_budget(
        db,
        team_id=boss.team.id,
        user_id=None,
        project_id=client_a.id,
        monthly_credits=Decimal("100"),
    )
    set_budget(db, team_id=boss.team.id, user_id=None, monthly_credits=Decimal("1000"))

    period = review_period(_day(11).date(), _day(20).date(), NOW)
    review = cost_review(db, Scope(boss.team.id), period, NOW)
    assert review.total.credits == 60 and review.previous_total.credits == 20
    assert review.change_percent == Decimal("200.0")
    assert review.previous_period.start == _day(1).replace(hour=0)
    a = next(t for t in review.by_project if t.key == str(client_a.id))
    assert (a.name, a.credits, a.previous_credits, a.change_percent) == (
        "Client A",
        50,
        20,
        Decimal("150.0"),
    )
    assert len(a.daily) == 10
    assert {p.day.day: p.credits for p in a.daily if p.credits} == {12: 30, 20: 20}
    g = next(t for t in review.by_project if t.key == str(general.id))
    assert g.previous_credits == 0 and g.change_percent is None
    assert {t.key: t.credits for t in review.by_model} == {"flux-2-pro": 40, "flux-2-flex": 20}

    team, *projects = review.forecasts
    # 60 credits over 10 days: 6 a day; June has 11 days left counting the 20th.
    assert (team.scope, team.daily_rate, team.month_to_date) == ("team", Decimal("6.00"), 80)
    assert team.projected_month_end == Decimal("146.00")
    assert team.days_until_budget_runs_out == Decimal("153.3")  # (1000 - 80) / 6
    fa = next(f for f in projects if f.project_id == client_a.id)
    assert (fa.daily_rate, fa.month_to_date, fa.monthly_budget) == (Decimal("5.00"), 70, 100)
    assert fa.projected_month_end == Decimal("125.00")
    assert fa.days_until_budget_runs_out == Decimal("6.0")  # (100 - 70) / 5


def test_review_ranges_are_validated_with_errors_that_name_the_field(
    committed_db: Session, client: TestClient, sign_in: SignIn
) -> None:
    boss = make_person(committed_db, role=Role.MANAGER)
    committed_db.commit()
    browser = sign_in(boss)
    backwards = browser.get(
        "/api/v1/costs/review", params={"from": "2026-06-10", "to": "2026-06-01"}
    )
    assert backwards.status_code == 422
    assert backwards.json()["error"]["fields"][0]["field"] == "to"
    too_long = browser.get(
        "/api/v1/costs/review", params={"from": "2020-01-01", "to": "2026-06-01"}
    )
    assert too_long.status_code == 422
    assert too_long.json()["error"]["fields"][0]["field"] == "from"
    assert "COST_REVIEW_MAX_DAYS" in too_long.json()["error"]["message"]
    not_a_date = browser.get("/api/v1/costs/review", params={"from": "June"})
    assert not_a_date.status_code == 422
    assert "from" in str(not_a_date.json()["error"]["fields"])
    ok = browser.get("/api/v1/costs/review", params={"from": "2026-06-01", "to": "2026-06-03"})
    assert ok.status_code == 200
    previous = ok.json()["previous_period"]
    assert previous["start"].startswith("2026-05-29") and previous["end"].startswith("2026-06-01")
    page = browser.get("/costs/review", params={"from": "2026-06-01", "to": "2026-06-03"})
    assert page.status_code == 200 and "Burn rate and forecast" in page.text


def test_dashboard_ledger_and_exports_carry_projects(
    committed_db: Session, sign_in: SignIn
) -> None:
    boss = make_person(committed_db, role=Role.MANAGER)
    member = make_person(committed_db, team=boss.team)
    client_a = create_project(committed_db, _changer(boss), name="Client A")
    make_charge(committed_db, member, "7", project_id=client_a.id)
    make_charge(committed_db, member, "4")
    make_charge(committed_db, boss, "2", project_id=client_a.id)
    committed_db.commit()
    browser = sign_in(boss)

    summary = browser.get("/api/v1/costs/summary").json()
    assert {p["name"]: p["credits"] for p in summary["by_project"]} == {
        "Client A": "9.0000",
        "General": "4.0000",
    }
    only_a = browser.get("/api/v1/costs/summary", params={"project": str(client_a.id)}).json()
    assert only_a["total"]["credits"] == "9.0000" and only_a["project_id"] == str(client_a.id)

    ledger = browser.get("/api/v1/costs/ledger").json()
    assert {r["project"] for r in ledger["rows"]} == {"Client A", "General"}
    assert {p["name"]: p["charges"] for p in ledger["by_project"]} == {"Client A": 2, "General": 1}

    rows = list(csv.DictReader(io.StringIO(browser.get("/costs/export.csv").text)))
    assert sorted(r["project"] for r in rows) == ["Client A", "Client A", "General"]
    totals = list(
        csv.DictReader(
            io.StringIO(browser.get("/costs/export.csv", params={"group": "project"}).text)
        )
    )
    assert {t["project"]: t["credits"] for t in totals} == {
        "Client A": "9.0000",
        "General": "4.0000",
    }
    api_totals = browser.get("/api/v1/costs/ledger", params={"format": "projects.csv"}).text
    assert "Client A" in api_totals

    page = browser.get("/costs").text
    assert "Spend by project" in page and "Client A" in page
    # A member's own figures, by project too; and the review is theirs alone.
    mine = sign_in(member).get("/api/v1/costs/summary").json()
    assert {p["name"]: p["credits"] for p in mine["by_project"]} == {
        "Client A": "7.0000",
        "General": "4.0000",
    }
    review = sign_in(member).get("/api/v1/costs/review").json()
    assert review["scope"] == "person" and review["total"]["credits"] == "11.0000"
    assert utcnow() - timedelta(days=1) < datetime.fromisoformat(review["period"]["end"])


def test_the_dashboard_sets_a_project_budget(committed_db: Session, sign_in: SignIn) -> None:
    boss = make_person(committed_db, role=Role.MANAGER)
    client_a = create_project(committed_db, _changer(boss), name="Client A")
    committed_db.commit()
    browser = sign_in(boss)
    saved = browser.post(
        "/costs/budgets", data={"project_id": str(client_a.id), "monthly_credits": "500"}
    )
    assert saved.status_code == 303
    lines = browser.get("/api/v1/costs/budgets").json()
    assert [(line["scope"], line["name"], line["monthly_credits"]) for line in lines] == [
        ("project", "Client A", "500.0000")
    ]
    both = browser.post(
        "/costs/budgets",
        data={"project_id": str(client_a.id), "user_id": str(boss.user.id), "monthly_credits": "5"},
    )
    assert both.status_code == 422 and "not both" in both.text
