"""Cost pages and API: who sees what, budgets set by managers, exports that match the dashboard."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.auth.tokens import issue_token
from app.costs.models import Budget
from app.costs.service import month_start
from app.db import utcnow
from app.jobs.models import JobStatus
from tests.costs.factories import Caller, make_budget, make_charge, signed_in
from tests.factories import Person, make_person, make_team


@dataclass
class World:
    manager: Person
    ann: Person
    bob: Person
    other_manager: Person
    zed: Person

    def sign_in(self, db: Session, who: Person) -> Caller:
        return signed_in(db, who)


@pytest.fixture
def world(committed_db: Session) -> World:
    db = committed_db
    team_a = make_team(db, "Studio A")
    team_b = make_team(db, "Studio B")
    manager = make_person(db, team_a, Role.MANAGER)
    ann = make_person(db, team_a)
    bob = make_person(db, team_a)
    other_manager = make_person(db, team_b, Role.MANAGER)
    zed = make_person(db, team_b)
    # Team A this month.
    make_charge(db, ann, "3", prompt="ann lighthouse")
    make_charge(db, ann, "3", prompt="ann lighthouse")
    make_charge(db, ann, "6", model="flux-2-flex", prompt="ann typography poster")
    make_charge(db, ann, "3", prompt="ann failed one", status=JobStatus.FAILED)
    make_charge(db, bob, "4.5", prompt="bob moderated", status=JobStatus.MODERATED)
    make_charge(db, bob, "1.25", prompt="=HYPERLINK(bob)")
    make_charge(db, manager, "12", model="flux-2-flex", prompt="manager big one")
    # Team A last month: outside this month's figures.
    make_charge(db, ann, "100", prompt="ann last month", at=month_start() - timedelta(days=3))
    # Team B: never visible to team A.
    make_charge(db, zed, "77", prompt="TEAM-B-SECRET prompt")
    make_charge(db, other_manager, "11", prompt="TEAM-B-SECRET manager")
    db.commit()
    return World(manager, ann, bob, other_manager, zed)


A_MONTH_TOTAL = Decimal("3") + 3 + 6 + 3 + Decimal("4.5") + Decimal("1.25") + 12
ANN_MONTH_TOTAL = Decimal("15")


def _parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_manager_dashboard_shows_the_team_and_nothing_of_another(
    committed_db: Session, world: World, client: TestClient
) -> None:
    caller = signed_in(committed_db, world.manager)
    page = client.get("/costs", headers=caller.headers)
    assert page.status_code == 200
    html = page.text
    for name in (world.ann.user.name, world.bob.user.name, world.manager.user.name):
        assert name in html
    assert "manager big one" in html
    assert 'id="table-by-model"' in html and "flux-2-flex" in html
    assert "Monthly budgets" in html
    assert "TEAM-B-SECRET" not in html
    assert world.zed.user.name not in html
    assert f"{A_MONTH_TOTAL:,.2f}" in html


def test_member_sees_only_their_own_figures(
    committed_db: Session, world: World, client: TestClient
) -> None:
    caller = signed_in(committed_db, world.ann)
    page = client.get("/costs", headers=caller.headers)
    assert page.status_code == 200
    html = page.text
    assert "My spend" in html
    assert "ann lighthouse" in html
    assert "bob moderated" not in html and "manager big one" not in html
    assert world.bob.user.name not in html
    assert "Monthly budgets" not in html  # no budget forms for members
    summary = client.get("/api/v1/costs/summary", headers=caller.headers).json()
    assert summary["scope"] == "person"
    assert Decimal(summary["total"]["credits"]) == ANN_MONTH_TOTAL
    assert summary["by_person"] == []
    assert {p["prompt"] for p in summary["top_prompts"]} == {
        "ann lighthouse",
        "ann typography poster",
        "ann failed one",
    }
    # Another person's figures: refused for a teammate, not found for another team.
    teammate = client.get(
        "/api/v1/costs/summary", params={"user_id": str(world.bob.user.id)}, headers=caller.headers
    )
    assert teammate.status_code == 403
    assert teammate.json()["error"]["code"] == "forbidden"
    ledger = client.get("/api/v1/costs/ledger", headers=caller.headers).json()
    assert {row["user_id"] for row in ledger["rows"]} == {str(world.ann.user.id)}
    export = client.get("/costs/export.csv", headers=caller.headers)
    rows = _parse_csv(export.text)
    assert rows and {row["user_id"] for row in rows} == {str(world.ann.user.id)}
    assert client.get("/api/v1/costs/budgets", headers=caller.headers).status_code == 403
    assert client.get("/api/v1/costs/balance", headers=caller.headers).status_code == 403


def test_manager_of_one_team_gets_nothing_of_another(
    committed_db: Session, world: World, client: TestClient
) -> None:
    caller = signed_in(committed_db, world.manager)
    zed = str(world.zed.user.id)
    for path in ("/api/v1/costs/summary", "/api/v1/costs/ledger", "/costs/export.csv"):
        response = client.get(path, params={"user_id": zed}, headers=caller.headers)
        assert response.status_code == 404, path
        assert "TEAM-B-SECRET" not in response.text
    ledger = client.get("/api/v1/costs/ledger", headers=caller.headers).json()
    assert all("TEAM-B-SECRET" not in row["prompt"] for row in ledger["rows"])
    export = client.get("/costs/export.csv", headers=caller.headers).text
    assert "TEAM-B-SECRET" not in export and world.zed.user.name not in export
    put = client.put(
        "/api/v1/costs/budgets",
        json={"user_id": zed, "monthly_credits": "5"},
        headers={**caller.headers, "x-csrf-token": caller.csrf},
    )
    assert put.status_code == 404
    assert committed_db.scalar(select(Budget).where(Budget.user_id == world.zed.user.id)) is None


def test_export_totals_match_the_dashboard(
    committed_db: Session, world: World, client: TestClient
) -> None:
    caller = signed_in(committed_db, world.manager)
    summary = client.get("/api/v1/costs/summary?period=month", headers=caller.headers).json()
    start = summary["period"]["start"][:10]
    today = utcnow().date().isoformat()
    export = client.get(
        "/costs/export.csv", params={"start": start, "end": today}, headers=caller.headers
    )
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    rows = _parse_csv(export.text)
    csv_total = sum(Decimal(row["credits"]) for row in rows)
    assert csv_total == Decimal(summary["total"]["credits"]) == A_MONTH_TOTAL
    assert len(rows) == summary["total"]["charges"]
    assert sum(Decimal(r["usd"]) for r in rows) == Decimal(summary["total"]["usd"])
    by_person = {p["user_id"]: Decimal(p["credits"]) for p in summary["by_person"]}
    assert by_person[str(world.ann.user.id)] == ANN_MONTH_TOTAL
    # A spreadsheet would run a cell starting with "=": the export neutralises it.
    assert any(row["prompt"] == "'=HYPERLINK(bob)" for row in rows)

    # The JSON ledger, page by page, adds up to the same total.
    seen = Decimal(0)
    offset: int | None = 0
    while offset is not None:
        page = client.get(
            "/api/v1/costs/ledger",
            params={"start": start, "end": today, "limit": 3, "offset": offset},
            headers=caller.headers,
        ).json()
        assert Decimal(page["total"]["credits"]) == A_MONTH_TOTAL
        seen += sum(Decimal(row["credits"]) for row in page["rows"])
        offset = page["next_offset"]
    assert seen == A_MONTH_TOTAL

    # Filters: by person and by model.
    flex = client.get(
        "/costs/export.csv",
        params={"start": start, "end": today, "model": "flux-2-flex"},
        headers=caller.headers,
    )
    flex_rows = _parse_csv(flex.text)
    assert {r["model"] for r in flex_rows} == {"flux-2-flex"}
    assert sum(Decimal(r["credits"]) for r in flex_rows) == Decimal("18")
    model_line = next(m for m in summary["by_model"] if m["model"] == "flux-2-flex")
    assert Decimal(model_line["credits"]) == Decimal("18")
    ann_json = client.get(
        "/api/v1/costs/ledger",
        params={"start": start, "end": today, "user_id": str(world.ann.user.id)},
        headers=caller.headers,
    ).json()
    assert Decimal(ann_json["total"]["credits"]) == ANN_MONTH_TOTAL
    # The dashboard's export form sends empty fields for "everyone" and "all models".
    blank = client.get(
        "/costs/export.csv",
        params={"start": start, "end": today, "user_id": "", "model": ""},
        headers=caller.headers,
    )
    assert sum(Decimal(r["credits"]) for r in _parse_csv(blank.text)) == A_MONTH_TOTAL
    # The CSV flavour of the API is the same file.
    api_csv = client.get(
        "/api/v1/costs/ledger",
        params={"start": start, "end": today, "format": "csv"},
        headers=caller.headers,
    )
    assert sum(Decimal(r["credits"]) for r in _parse_csv(api_csv.text)) == A_MONTH_TOTAL


def test_failed_and_moderated_cost_and_averages(
    committed_db: Session, world: World, client: TestClient
) -> None:
    caller = signed_in(committed_db, world.manager)
    summary = client.get("/api/v1/costs/summary", headers=caller.headers).json()
    assert Decimal(summary["lost"]["credits"]) == Decimal("7.5")  # 3 failed + 4.5 moderated
    outcomes = {o["status"]: Decimal(o["credits"]) for o in summary["by_outcome"]}
    assert outcomes == {"ready": Decimal("25.25"), "failed": 3, "moderated": Decimal("4.5")}
    pro = next(m for m in summary["by_model"] if m["model"] == "flux-2-pro")
    assert pro["charges"] == 5 and pro["ready_images"] == 3
    assert Decimal(pro["avg_credits_per_job"]) == Decimal("2.95")
    assert Decimal(pro["credits_per_ready_image"]) == Decimal("4.92")
    assert summary["top_prompts"][0]["prompt"] == "manager big one"
    lighthouse = next(p for p in summary["top_prompts"] if p["prompt"] == "ann lighthouse")
    assert lighthouse["charges"] == 2 and Decimal(lighthouse["credits"]) == 6
    assert sum(Decimal(d["credits"]) for d in summary["by_day"]) == A_MONTH_TOTAL


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "2024-13-01"}, "start"),
        ({"end": "yesterday"}, "end"),
        ({"start": "2025-03-10", "end": "2025-03-01"}, "end"),
        ({"user_id": "not-a-uuid"}, "user_id"),
        ({"model": "m" * 70}, "model"),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/costs/ledger", "/costs/export.csv"])
def test_bad_filters_are_422_naming_the_field(
    committed_db: Session,
    world: World,
    client: TestClient,
    path: str,
    params: dict[str, str],
    field: str,
) -> None:
    caller = signed_in(committed_db, world.manager)
    response = client.get(path, params=params, headers=caller.headers)
    assert response.status_code == 422
    if response.headers["content-type"].startswith("application/json"):
        assert field in [f["field"] for f in response.json()["error"]["fields"]]
    else:
        # The page route answers a browser with a page that says what to change.
        assert f"The {field} date" in response.text


def test_bad_period_is_422(committed_db: Session, world: World, client: TestClient) -> None:
    caller = signed_in(committed_db, world.manager)
    response = client.get("/api/v1/costs/summary?period=year", headers=caller.headers)
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "period"


def test_manager_sets_budgets_with_the_form(
    committed_db: Session, world: World, client: TestClient
) -> None:
    caller = signed_in(committed_db, world.manager)
    form = {"csrf_token": caller.csrf, "user_id": str(world.ann.user.id), "monthly_credits": "18"}
    saved = client.post("/costs/budgets", data=form, headers=caller.headers, follow_redirects=False)
    assert saved.status_code == 303
    budget = committed_db.scalar(select(Budget).where(Budget.user_id == world.ann.user.id))
    assert budget is not None and budget.monthly_credits == 18
    assert budget.updated_by_id == world.manager.user.id
    team_form = {"csrf_token": caller.csrf, "user_id": "", "monthly_credits": "1,000"}
    assert client.post("/costs/budgets", data=team_form, headers=caller.headers).status_code == 200
    lines = client.get("/api/v1/costs/budgets", headers=caller.headers).json()
    assert [(line["scope"], Decimal(line["monthly_credits"])) for line in lines] == [
        ("team", 1000),
        ("person", 18),
    ]
    ann_line = lines[1]
    assert Decimal(ann_line["spent"]) == ANN_MONTH_TOTAL
    assert ann_line["state"] == "warning"  # 15 of 18 is 83%

    bad = client.post(
        "/costs/budgets",
        data={**form, "monthly_credits": "lots"},
        headers=caller.headers,
    )
    assert bad.status_code == 422
    assert "must be a number" in bad.text
    negative = client.post(
        "/costs/budgets", data={**form, "monthly_credits": "-5"}, headers=caller.headers
    )
    assert negative.status_code == 422
    forged = client.post(
        "/costs/budgets",
        data={**form, "csrf_token": "wrong"},
        headers=caller.headers,
        follow_redirects=False,
    )
    assert forged.status_code == 403
    removed = client.post(
        "/costs/budgets",
        data={**form, "monthly_credits": ""},
        headers=caller.headers,
        follow_redirects=False,
    )
    assert removed.status_code == 303
    assert committed_db.scalar(select(Budget).where(Budget.user_id == world.ann.user.id)) is None


def test_members_cannot_set_budgets(
    committed_db: Session, world: World, client: TestClient
) -> None:
    caller = signed_in(committed_db, world.ann)
    form = {"csrf_token": caller.csrf, "user_id": str(world.ann.user.id), "monthly_credits": "1e6"}
    assert client.post("/costs/budgets", data=form, headers=caller.headers).status_code == 403
    put = client.put(
        "/api/v1/costs/budgets",
        json={"monthly_credits": "1000000"},
        headers={**caller.headers, "x-csrf-token": caller.csrf},
    )
    assert put.status_code == 403
    assert committed_db.scalar(select(Budget)) is None


def test_budget_api_with_a_token(committed_db: Session, world: World, client: TestClient) -> None:
    issued = issue_token(
        committed_db, user_id=world.manager.user.id, team_id=world.manager.team.id, name="ci"
    )
    committed_db.commit()
    bearer = {"authorization": f"Bearer {issued.secret}"}
    put = client.put(
        "/api/v1/costs/budgets",
        json={"user_id": str(world.bob.user.id), "monthly_credits": "6"},
        headers=bearer,
    )
    assert put.status_code == 200
    (line,) = put.json()
    assert line["state"] == "warning" and Decimal(line["remaining"]) == Decimal("0.25")
    bad = client.put("/api/v1/costs/budgets", json={"monthly_credits": "-1"}, headers=bearer)
    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0]["field"] == "monthly_credits"


def test_my_spend_warns_at_80_percent(
    committed_db: Session, world: World, client: TestClient
) -> None:
    make_budget(committed_db, world.ann, "18", personal=True)
    committed_db.commit()
    caller = signed_in(committed_db, world.ann)
    mine = client.get("/api/v1/me/spend", headers=caller.headers).json()
    assert Decimal(mine["this_month"]["credits"]) == ANN_MONTH_TOTAL
    assert Decimal(mine["remaining"]) == 3
    assert mine["limited_by"] == "person"
    assert mine["state"] == "warning"
    page = client.get("/costs", headers=caller.headers).text
    assert 'id="spend-warning"' in page and "83.3%" in page
    # Under 80%: no warning.
    make_budget(committed_db, world.ann, "100", personal=True)
    committed_db.commit()
    assert client.get("/api/v1/me/spend", headers=caller.headers).json()["state"] == "ok"
    assert 'id="spend-warning"' not in client.get("/costs", headers=caller.headers).text
    # A tighter team budget is what limits her then.
    make_budget(committed_db, world.ann, "35", personal=False)
    committed_db.commit()
    mine = client.get("/api/v1/me/spend", headers=caller.headers).json()
    assert mine["limited_by"] == "team"
    assert Decimal(mine["remaining"]) == 35 - A_MONTH_TOTAL
    assert mine["state"] == "warning"


def test_signed_out_callers_are_sent_to_sign_in(client: TestClient) -> None:
    assert client.get("/costs", follow_redirects=False).status_code == 303
    assert client.get("/api/v1/costs/summary").status_code == 401


def test_a_summary_range_longer_than_the_review_limit_is_refused_by_name(
    committed_db: Session, world: World, client: TestClient
) -> None:
    # A range of centuries once made the summary build a series of ~600,000 days.
    caller = signed_in(committed_db, world.manager)
    response = client.get(
        "/api/v1/costs/summary", params={"start": "0353-06-05"}, headers=caller.headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "start"
