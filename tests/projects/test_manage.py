"""Managers create, rename and archive projects (page and API), each change audited; project
budgets refuse by name, the tightest budget winning."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry
from app.auth.models import Role
from app.costs.service import BudgetExceeded, set_budget
from app.jobs.service import create_jobs
from app.projects.models import Project
from app.projects.service import Changer, create_project, default_project
from tests.api.conftest import MakeCaller
from tests.costs.factories import make_charge
from tests.factories import Person, make_person
from tests.signed_in import SignIn

PARAMS = {"prompt": "a red fox", "width": 1024, "height": 1024}


def _audit(db: Session, team_id: object) -> list[tuple[str, str, object, object]]:
    db.expire_all()
    rows = db.scalars(
        select(AuditEntry).where(AuditEntry.team_id == team_id).order_by(AuditEntry.at)
    ).all()
    return [(r.action, r.target_type, r.before, r.after) for r in rows]


def test_the_api_creates_renames_archives_and_restores_with_an_audit_entry_each(
    committed_db: Session, client: TestClient, make_caller: MakeCaller
) -> None:
    boss = make_caller(role=Role.MANAGER)
    made = client.post("/api/v1/projects", json={"name": "  Client   A "}, headers=boss.headers)
    assert made.status_code == 201, made.text
    project = made.json()
    assert project["name"] == "Client A" and not project["archived"]
    path = f"/api/v1/projects/{project['id']}"
    renamed = client.patch(path, json={"name": "Client Alpha"}, headers=boss.headers)
    assert renamed.json()["name"] == "Client Alpha"
    archived = client.patch(path, json={"archived": True}, headers=boss.headers)
    assert archived.json()["archived"] is True
    listed = client.get("/api/v1/projects", params={"archived": "false"}, headers=boss.headers)
    assert [p["name"] for p in listed.json()] == ["General"]
    restored = client.patch(path, json={"archived": False}, headers=boss.headers)
    assert restored.json()["archived"] is False
    assert _audit(committed_db, boss.team.id) == [
        ("project.create", "project", None, {"name": "Client A"}),
        ("project.rename", "project", {"name": "Client A"}, {"name": "Client Alpha"}),
        ("project.archive", "project", {"archived": False}, {"archived": True}),
        ("project.restore", "project", {"archived": True}, {"archived": False}),
    ]


def test_the_api_refuses_clear_errors_and_members(
    committed_db: Session, client: TestClient, make_caller: MakeCaller
) -> None:
    boss = make_caller(role=Role.MANAGER)
    member = make_caller(team=boss.team)
    assert (
        client.post("/api/v1/projects", json={"name": "X"}, headers=member.headers).status_code
        == 403
    )
    client.post("/api/v1/projects", json={"name": "Client A"}, headers=boss.headers)
    taken = client.post("/api/v1/projects", json={"name": "client a"}, headers=boss.headers)
    assert taken.status_code == 422
    assert taken.json()["error"]["fields"][0]["field"] == "name"
    assert "already has a project named" in taken.json()["error"]["message"]
    blank = client.post("/api/v1/projects", json={"name": "   "}, headers=boss.headers)
    assert blank.status_code == 422
    general = default_project(committed_db, team_id=boss.team.id)
    committed_db.commit()
    refused = client.patch(
        f"/api/v1/projects/{general.id}", json={"archived": True}, headers=boss.headers
    )
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "default_project"
    # Members see the list (to choose a project) but change nothing.
    assert client.get("/api/v1/projects", headers=member.headers).status_code == 200
    assert (
        client.patch(
            f"/api/v1/projects/{general.id}", json={"name": "Mine"}, headers=member.headers
        ).status_code
        == 403
    )


def test_the_projects_page_for_managers_only(committed_db: Session, sign_in: SignIn) -> None:
    boss = make_person(committed_db, role=Role.MANAGER)
    member = make_person(committed_db, team=boss.team)
    committed_db.commit()
    page = sign_in(boss)
    assert page.get("/projects").status_code == 200
    assert page.post("/projects", data={"name": "Client A"}).status_code == 303
    project = committed_db.scalar(select(Project).where(Project.name == "Client A"))
    assert project is not None
    again = page.post("/projects", data={"name": "CLIENT A"})
    assert again.status_code == 422
    assert "already has a project named" in again.text
    assert page.post(f"/projects/{project.id}/rename", data={"name": "Client B"}).status_code == 303
    assert (
        page.post(f"/projects/{project.id}/archive", data={"archived": "true"}).status_code == 303
    )
    committed_db.refresh(project)
    assert (project.name, project.archived) == ("Client B", True)
    listing = page.get("/projects").text
    assert "Client B" in listing and "Restore" in listing
    assert sign_in(member).get("/projects").status_code == 403
    assert [a for a, *_ in _audit(committed_db, boss.team.id)] == [
        "project.create",
        "project.rename",
        "project.archive",
    ]


def _changer(person: Person) -> Changer:
    return Changer(team_id=person.team.id, user_id=person.user.id, email=person.user.email)


def _queue(db: Session, person: Person, project: Project) -> None:
    create_jobs(
        db,
        user_id=person.user.id,
        team_id=person.team.id,
        model="flux-2-pro",
        params=PARAMS,
        project_id=project.id,
    )


def test_a_project_budget_refuses_by_name_and_the_tightest_budget_is_named(db: Session) -> None:
    boss = make_person(db, role=Role.MANAGER)
    client_a = create_project(db, _changer(boss), name="Client A")
    other = create_project(db, _changer(boss), name="Client B")
    make_charge(db, boss, "488")  # in General: not Client A's
    set_budget(
        db,
        team_id=boss.team.id,
        user_id=None,
        project_id=client_a.id,
        monthly_credits=Decimal("500"),
        set_by=boss.user.id,
    )
    # General's spend does not count against Client A.
    _queue(db, boss, client_a)  # holds the estimate (3 credits at 1 MP)
    set_budget(
        db,
        team_id=boss.team.id,
        user_id=None,
        project_id=client_a.id,
        monthly_credits=Decimal("5"),
        set_by=boss.user.id,
    )
    with pytest.raises(BudgetExceeded) as refused:
        _queue(db, boss, client_a)
    assert refused.value.scope == "project"
    assert str(refused.value).startswith(
        "Project 'Client A' has 2.00 of 5.00 credits left this month; this request needs 3.00"
    )
    # Client B has no budget of its own; the team's is looser than the person's: the person's
    # (the tightest) is the one named.
    set_budget(
        db,
        team_id=boss.team.id,
        user_id=None,
        monthly_credits=Decimal("493"),
        set_by=boss.user.id,
    )
    set_budget(
        db,
        team_id=boss.team.id,
        user_id=boss.user.id,
        monthly_credits=Decimal("490"),
        set_by=boss.user.id,
    )
    with pytest.raises(BudgetExceeded) as person:
        _queue(db, boss, other)
    assert person.value.scope == "person"
    assert "Your budget has -1.00" not in str(person.value)
    assert str(person.value).startswith("Your budget has 0.00 of 490.00 credits left")
    actions = [a for a, *_ in _audit(db, boss.team.id)]
    assert actions.count("budget.set") == 4


def test_budget_set_and_remove_are_audited_with_before_and_after(db: Session) -> None:
    boss = make_person(db, role=Role.MANAGER)
    project = create_project(db, _changer(boss), name="Client A")
    for credits in (Decimal("500"), Decimal("750"), None):
        set_budget(
            db,
            team_id=boss.team.id,
            user_id=None,
            project_id=project.id,
            monthly_credits=credits,
            set_by=boss.user.id,
        )
    budget_rows = [row for row in _audit(db, boss.team.id) if row[1] == "budget"]
    assert budget_rows == [
        ("budget.set", "budget", None, {"monthly_credits": "500"}),
        ("budget.set", "budget", {"monthly_credits": "500.0000"}, {"monthly_credits": "750"}),
        ("budget.remove", "budget", {"monthly_credits": "750.0000"}, None),
    ]
