"""Access rules, quotas and approvals through both doors: the generate form and /api/v1."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from app.access import approvals, policy
from app.access.models import ApprovalRequest
from app.audit.models import AuditEntry
from app.auth.models import Role
from app.auth.tokens import issue_token
from app.costs.models import Reservation
from app.errors import StudioError
from app.jobs import messages
from app.jobs.models import Job
from app.main import create_app
from tests.api.conftest import Caller
from tests.factories import Person, make_person, make_team
from tests.signed_in import SignIn


@dataclass
class Team:
    manager: Person
    member: Person
    manager_api: Caller
    member_api: Caller


def _caller(db: Session, person: Person) -> Caller:
    issued = issue_token(db, user_id=person.user.id, team_id=person.team.id, name="tests")
    db.commit()
    return Caller(person=person, token_id=issued.token.id, secret=issued.secret)


@pytest.fixture
def team(committed_db: Session) -> Team:
    studio = make_team(committed_db, "Access Studio")
    manager = make_person(committed_db, studio, Role.MANAGER)
    member = make_person(committed_db, studio, Role.MEMBER)
    committed_db.commit()
    return Team(manager, member, _caller(committed_db, manager), _caller(committed_db, member))


@pytest.fixture
def api() -> Any:
    with TestClient(create_app(), base_url="https://testserver") as client:
        yield client


def _jobs(db: Session, person: Person) -> int:
    db.expire_all()
    return db.scalar(select(func.count(Job.id)).where(Job.user_id == person.user.id)) or 0


def _held(db: Session, person: Person) -> int:
    return (
        db.scalar(
            select(func.count(Reservation.job_id)).where(Reservation.user_id == person.user.id)
        )
        or 0
    )


def _managers_only_max(api: TestClient, team: Team) -> None:
    answer = api.put(
        "/api/v1/access/rules",
        headers=team.manager_api.headers,
        json={"role": "member", "allowed_models": ["flux-2-pro", "flux-2-flex"]},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == [
        {
            "role": "member",
            "user_id": None,
            "name": None,
            "allowed_models": ["flux-2-flex", "flux-2-pro"],
            "max_megapixels": None,
            "max_side": None,
            "max_count": None,
        }
    ]


def _form(model: str = "flux-2-pro", **values: str) -> dict[str, str]:
    return {"model": model, "prompt": "a lighthouse at dusk", "count": "1", **values}


# --- model access ----------------------------------------------------------------------------


def test_a_model_for_managers_only_is_refused_to_members_at_both_doors_before_paying(
    committed_db: Session, team: Team, api: TestClient, sign_in: SignIn
) -> None:
    _managers_only_max(api, team)
    body = {"model": "flux-2-max", "prompt": "a lighthouse"}
    refused = api.post("/api/v1/jobs", headers=team.member_api.headers, json=body)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "access_limited"
    assert error["message"] == (
        "flux-2-max is limited to managers in this team; ask a manager or choose flux-2-pro"
    )
    assert [f["field"] for f in error["fields"]] == ["model"]

    page = sign_in(team.member)
    answer = page.post("/generate", data=_form("flux-2-max"), headers={"hx-request": "true"})
    assert answer.status_code == 200
    assert "flux-2-max is limited to managers in this team" in answer.text
    assert "data-ask-approval" in answer.text
    # Nothing stored, held or sent for either refusal.
    assert _jobs(committed_db, team.member) == 0
    assert _held(committed_db, team.member) == 0

    allowed = api.post("/api/v1/jobs", headers=team.manager_api.headers, json=body)
    assert allowed.status_code == 201, allowed.text
    ok = api.post(
        "/api/v1/jobs", headers=team.member_api.headers, json={**body, "model": "flux-2-pro"}
    )
    assert ok.status_code == 201, ok.text


def test_a_persons_own_rule_wins_over_their_roles(
    committed_db: Session, team: Team, api: TestClient
) -> None:
    _managers_only_max(api, team)
    answer = api.put(
        "/api/v1/access/rules",
        headers=team.manager_api.headers,
        json={"user_id": str(team.member.user.id), "allowed_models": ["flux-2-max"]},
    )
    assert answer.status_code == 200, answer.text
    body = {"model": "flux-2-pro", "prompt": "a lighthouse"}
    refused = api.post("/api/v1/jobs", headers=team.member_api.headers, json=body)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == (
        "flux-2-pro is not among the models open to you in this team; ask a manager or "
        "choose flux-2-max"
    )
    body["model"] = "flux-2-max"
    assert api.post("/api/v1/jobs", headers=team.member_api.headers, json=body).status_code == 201


def test_models_say_which_the_caller_may_use_and_the_generate_page_disables_the_rest(
    team: Team, api: TestClient, sign_in: SignIn
) -> None:
    _managers_only_max(api, team)
    api.put(
        "/api/v1/access/rules",
        headers=team.manager_api.headers,
        json={"role": "member", "allowed_models": ["flux-2-pro"], "max_side": 1024, "max_count": 3},
    )
    mine = api.get("/api/v1/models", headers=team.member_api.headers).json()
    by_name = {m["name"]: m for m in mine["models"]}
    assert by_name["flux-2-pro"]["available"] is True
    assert by_name["flux-2-max"]["available"] is False
    assert by_name["flux-2-max"]["unavailable_reason"].startswith(
        "flux-2-max is limited to managers in this team"
    )
    assert mine["access"]["role"] == "member"
    assert (mine["access"]["max_side"], mine["access"]["max_count"]) == (1024, 3)
    managers = api.get("/api/v1/models", headers=team.manager_api.headers).json()
    assert all(m["available"] for m in managers["models"])
    assert managers["access"]["max_count"] is None

    page = sign_in(team.member).get("/")
    assert page.status_code == 200
    html = page.text
    max_radio = html.split('value="flux-2-max"', 1)[1].split(">", 1)[0]
    assert "disabled" in max_radio
    assert "flux-2-max is limited to managers in this team" in html
    pro_radio = html.split('value="flux-2-pro"', 1)[1].split(">", 1)[0]
    assert "disabled" not in pro_radio
    count_input = html.split('id="count"', 1)[1].split(">", 1)[0]
    assert 'max="3"' in count_input
    width_input = html.split('id="width"', 1)[1].split(">", 1)[0]
    assert 'max="1024"' in width_input and 'data-side-cap="1024"' in width_input


# --- caps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "params", "count", "field", "words"),
    [
        ({"max_side": 1024}, {"width": 1536, "height": 1024}, 1, "params.width", "1024 pixels"),
        ({"max_megapixels": "1"}, {"width": 1440, "height": 1440}, 1, "params.width", "1.98 MP"),
        ({"max_count": 2}, {}, 3, "count", "at most 2 images"),
    ],
)
def test_size_and_batch_caps_are_refused_at_both_doors(
    committed_db: Session,
    team: Team,
    api: TestClient,
    sign_in: SignIn,
    rule: dict[str, Any],
    params: dict[str, int],
    count: int,
    field: str,
    words: str,
) -> None:
    set_rule = api.put(
        "/api/v1/access/rules", headers=team.manager_api.headers, json={"role": "member", **rule}
    )
    assert set_rule.status_code == 200, set_rule.text
    body = {"model": "flux-2-pro", "prompt": "a lighthouse", "params": params, "count": count}
    refused = api.post("/api/v1/jobs", headers=team.member_api.headers, json=body)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "access_limited"
    assert words in error["message"], error["message"]
    assert [f["field"] for f in error["fields"]] == [field]

    form = _form(count=str(count), **{k: str(v) for k, v in params.items()})
    answer = sign_in(team.member).post("/generate", data=form, headers={"hx-request": "true"})
    assert words in answer.text
    assert _jobs(committed_db, team.member) == 0
    # Managers follow their own rule (none here).
    mine = api.post("/api/v1/jobs", headers=team.manager_api.headers, json=body)
    assert mine.status_code == 201, mine.text


def test_bad_rules_are_refused_with_the_field_named(team: Team, api: TestClient) -> None:
    for body, field in (
        ({"role": "member", "allowed_models": ["flux-9"]}, "allowed_models"),
        ({"role": "member", "max_side": 0}, "max_side"),
        ({"role": "member", "user_id": str(team.member.user.id)}, "role"),
        ({"user_id": str(uuid.uuid4()), "max_count": 1}, None),
    ):
        answer = api.put("/api/v1/access/rules", headers=team.manager_api.headers, json=body)
        assert answer.status_code in (404, 422), answer.text
        if field is not None:
            assert answer.status_code == 422
            assert field in str(answer.json()["error"]["fields"]), answer.text
    member = api.put(
        "/api/v1/access/rules", headers=team.member_api.headers, json={"role": "member"}
    )
    assert member.status_code == 403


# --- quotas ----------------------------------------------------------------------------------


def test_a_monthly_quota_counts_held_credits_and_refuses_at_both_doors(
    committed_db: Session, team: Team, api: TestClient, sign_in: SignIn
) -> None:
    quota = api.put(
        "/api/v1/access/quotas",
        headers=team.manager_api.headers,
        json={"user_id": str(team.member.user.id), "monthly_credits": "5"},
    )
    assert quota.status_code == 200, quota.text
    body = {"model": "flux-2-pro", "prompt": "a lighthouse"}
    first = api.post("/api/v1/jobs", headers=team.member_api.headers, json=body)
    assert first.status_code == 201, first.text  # 3 credits held of 5
    refused = api.post("/api/v1/jobs", headers=team.member_api.headers, json=body)
    assert refused.status_code == 402, refused.text
    assert (
        "Your budget has 2.00 of 5.00 credits left this month" in refused.json()["error"]["message"]
    )
    page = sign_in(team.member).post("/generate", data=_form(), headers={"hx-request": "true"})
    assert "Your budget has 2.00 of 5.00 credits left this month" in page.text
    assert "data-ask-approval" in page.text
    assert _jobs(committed_db, team.member) == 1
    audit = committed_db.scalars(
        select(AuditEntry).where(AuditEntry.action == "access.quota_set")
    ).one()
    assert audit.after == {"monthly_credits": "5"}
    assert audit.actor_id == team.manager.user.id


# --- approvals -------------------------------------------------------------------------------


def test_an_approved_request_runs_once_without_a_second_submission(
    committed_db: Session, team: Team, api: TestClient
) -> None:
    _managers_only_max(api, team)
    body = {
        "model": "flux-2-max",
        "prompt": "a lighthouse, please",
        "count": 2,
        "params": {"seed": 7},
    }
    asked = api.post("/api/v1/approvals", headers=team.member_api.headers, json=body)
    assert asked.status_code == 201, asked.text
    request = asked.json()
    assert request["status"] == "pending"
    assert request["refused_code"] == "access_limited"
    assert request["refused_reason"].startswith("flux-2-max is limited to managers")
    assert Decimal(request["estimated_credits"]) > 0
    assert request["job_ids"] == []
    assert _jobs(committed_db, team.member) == 0

    listed = api.get("/api/v1/approvals?status=pending", headers=team.manager_api.headers)
    assert [a["id"] for a in listed.json()] == [request["id"]]
    assert listed.json()[0]["requester"] == team.member.user.name

    member_try = api.post(
        f"/api/v1/approvals/{request['id']}/approve", headers=team.member_api.headers
    )
    assert member_try.status_code == 403
    approved = api.post(
        f"/api/v1/approvals/{request['id']}/approve",
        headers=team.manager_api.headers,
        json={"note": "for the launch"},
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert len(approved.json()["job_ids"]) == 2
    again = api.post(f"/api/v1/approvals/{request['id']}/approve", headers=team.manager_api.headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_decided"

    jobs = committed_db.scalars(
        select(Job).where(Job.user_id == team.member.user.id).order_by(Job.batch_index)
    ).all()
    assert [(j.model, j.seed, j.status) for j in jobs] == [
        ("flux-2-max", 7, "queued"),
        ("flux-2-max", 8, "queued"),
    ]
    # Held like any other job, so the ledger and budgets count it.
    assert _held(committed_db, team.member) == 2
    seen = api.get(f"/api/v1/approvals/{request['id']}", headers=team.member_api.headers)
    assert seen.json()["status"] == "approved"
    assert seen.json()["note"] == "for the launch"
    assert sorted(seen.json()["job_ids"]) == sorted(str(j.id) for j in jobs)
    actions = committed_db.scalars(select(AuditEntry.action).order_by(AuditEntry.at)).all()
    assert actions == ["access.rule_set", "approval.approved"]


def test_a_declined_request_makes_nothing_and_tells_the_requester_why(
    committed_db: Session, team: Team, api: TestClient, sign_in: SignIn
) -> None:
    _managers_only_max(api, team)
    member_page = sign_in(team.member)
    asked = member_page.post("/approvals", data=_form("flux-2-max"))
    assert asked.status_code == 303
    approval_id = asked.headers["location"].split("asked=")[1]
    manager_page = sign_in(team.manager)
    waiting = manager_page.get("/approvals")
    assert approval_id in waiting.text and "flux-2-max is limited to managers" in waiting.text
    declined = manager_page.post(
        f"/approvals/{approval_id}/decline", data={"note": "use flux-2-pro for drafts"}
    )
    assert declined.status_code == 303
    assert _jobs(committed_db, team.member) == 0
    mine = member_page.get("/").text
    assert "declined" in mine and "use flux-2-pro for drafts" in mine
    api_view = api.get(f"/api/v1/approvals/{approval_id}", headers=team.member_api.headers)
    assert api_view.json()["status"] == "declined"
    # Another member cannot read it.
    other = _caller(committed_db, make_person(committed_db, team.member.team))
    assert api.get(f"/api/v1/approvals/{approval_id}", headers=other.headers).status_code == 404
    entry = committed_db.scalars(
        select(AuditEntry).where(AuditEntry.action == "approval.declined")
    ).one()
    assert entry.after is not None and entry.after["note"] == "use flux-2-pro for drafts"


def test_the_page_approves_a_quota_refusal_and_the_jobs_skip_the_quota(
    committed_db: Session, team: Team, api: TestClient, sign_in: SignIn
) -> None:
    manager_page = sign_in(team.manager)
    saved = manager_page.post(
        "/access/quotas", data={"user_id": str(team.member.user.id), "monthly_credits": "1"}
    )
    assert saved.status_code == 303
    member_page = sign_in(team.member)
    asked = member_page.post("/approvals", data=_form(), headers={"hx-request": "true"})
    assert asked.status_code == 204
    approval_id = asked.headers["hx-redirect"].split("asked=")[1]
    row = committed_db.get(ApprovalRequest, uuid.UUID(approval_id))
    assert row is not None and row.refused_code == "budget_exceeded"
    approved = manager_page.post(f"/approvals/{approval_id}/approve", data={"note": ""})
    assert approved.status_code == 303
    assert _jobs(committed_db, team.member) == 1
    assert "approved" in member_page.get("/approvals").text


def test_asking_for_what_is_allowed_is_refused(team: Team, api: TestClient) -> None:
    answer = api.post(
        "/api/v1/approvals",
        headers=team.member_api.headers,
        json={"model": "flux-2-pro", "prompt": "fine as it is"},
    )
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "approval_not_needed"
    invalid = api.post(
        "/api/v1/approvals",
        headers=team.member_api.headers,
        json={"model": "flux-2-pro", "prompt": "x", "params": {"width": 100}},
    )
    assert invalid.status_code == 422
    assert invalid.json()["error"]["fields"][0]["field"] == "params.width"


def test_two_managers_approving_at_once_create_the_jobs_once(
    committed_db: Session, engine: Engine, team: Team
) -> None:
    second = make_person(committed_db, team.member.team, Role.MANAGER)
    policy.set_rule(
        committed_db,
        team_id=team.member.team.id,
        by=team.manager.user,
        role="member",
        allowed_models=["flux-2-pro"],
    )
    request = approvals.ask(
        committed_db,
        team_id=team.member.team.id,
        user_id=team.member.user.id,
        model="flux-2-max",
        params={"prompt": "one approval"},
        count=3,
    )
    committed_db.commit()
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def decide(manager: Person) -> None:
        with Session(bind=engine, expire_on_commit=False) as db:
            barrier.wait()
            try:
                _row, jobs = approvals.decide(
                    db,
                    team_id=team.member.team.id,
                    approval_id=request.id,
                    by=manager.user,
                    approve=True,
                )
                messages.discard_pending(db)
                db.commit()
                outcomes.append(f"approved:{len(jobs)}")
            except StudioError as exc:
                db.rollback()
                outcomes.append(exc.code)

    threads = [threading.Thread(target=decide, args=(m,)) for m in (team.manager, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["already_decided", "approved:3"]
    assert _jobs(committed_db, team.member) == 3
    approved = committed_db.scalar(
        select(func.count(AuditEntry.id)).where(AuditEntry.action == "approval.approved")
    )
    assert approved == 1


def test_the_access_page_refuses_bad_input_in_words_and_members_cannot_open_it(
    team: Team, sign_in: SignIn
) -> None:
    manager_page = sign_in(team.manager)
    assert manager_page.get("/access").status_code == 200
    for form, words in (
        ({"subject": "role:member", "max_side": "abc"}, "max_side must be a number"),
        ({"subject": "role:member", "max_megapixels": "NaN"}, "at most 2 decimals"),
        ({"subject": "role:member", "max_megapixels": "0.001"}, "at most 2 decimals"),
        ({"subject": "role:member", "max_count": "0"}, "max_count must be more than 0"),
        ({"subject": "nobody"}, "Choose a role or a person"),
    ):
        answer = manager_page.post("/access/rules", data=form)
        assert answer.status_code == 422, (form, answer.text[:200])
        assert words in answer.text, form
    member_page = sign_in(team.member)
    assert member_page.get("/access").status_code == 403
    assert member_page.post("/access/rules", data={"subject": "role:member"}).status_code == 403
