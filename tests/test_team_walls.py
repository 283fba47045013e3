"""The team wall, proved on every route: team A's ids replayed as team B find nothing.

The studio's promise (docs/architecture.md, invariant 7): every object is looked up with its
team in the WHERE clause, proved by replaying team A's ids as team B on every route. The routes
come from the app itself (`app.main.create_app().routes`), so a route added later is replayed
too, and a path parameter this test does not know fails it until someone says which of A's
objects it takes.

Team B calls as a browser session (pages, with its anti-forgery token) or its API token
(/api/v1). Every answer must be a 404 that shows none of team A's prompts, names or ids, and
afterwards every row of team A must be exactly as it was.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pyotp
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.access import approvals, policy
from app.access.models import AccessRule, ApprovalRequest
from app.alerts.models import Notice
from app.alerts.rules import fire
from app.audit.models import AuditEntry
from app.auth.models import (
    ApiToken,
    AuthSession,
    Invite,
    Membership,
    RecoveryCode,
    Role,
    Team,
    User,
)
from app.auth.service import create_invite, start_session
from app.auth.tokens import issue_token
from app.auth.two_factor import begin_setup, confirm_setup
from app.boards.models import Board, BoardItem
from app.costs.models import Budget, Charge, Reservation
from app.costs.service import record_charge, set_budget
from app.jobs import messages
from app.jobs.models import Favourite, Job, JobStatus
from app.jobs.service import create_jobs
from app.main import create_app
from app.projects.models import Project
from app.projects.service import Changer, create_project
from app.settings import get_settings
from tests.api.conftest import Caller, make_job, make_ready_job, sign_in
from tests.factories import Person, make_person, make_team
from tests.route_map import RouteCall, route_calls

#: Words only team A's rows contain; none may appear in anything team B is shown.
A_SECRETS = (
    "zanzibar lighthouse",
    "quetzal harbour",
    "obsidian failure",
    "marmalade reference",
    "Walled Garden Ltd",
    "Ottoline Quist",
    "Barnaby Fennimore",
    "Zephyr Moodboard",
    "Project Quincunx",
)

#: Routes where a team B *member* is stopped by a role check before any lookup happens: the
#: 403 says "your role here does not allow that" about team B, and reveals nothing of A.
ROLE_GATED_BEFORE_LOOKUP = {
    ("POST", "/team/members/{user_id}/role"),
    ("POST", "/team/members/{user_id}/remove"),
    ("POST", "/team/invites/{invite_id}/revoke"),
    ("POST", "/team/members/{user_id}/two-factor/reset"),
    ("POST", "/team/members/{user_id}/tokens/revoke"),
    ("POST", "/approvals/{approval_id}/approve"),
    ("POST", "/approvals/{approval_id}/decline"),
    ("POST", "/api/v1/approvals/{approval_id}/approve"),
    ("POST", "/api/v1/approvals/{approval_id}/decline"),
    ("PATCH", "/api/v1/projects/{project_id}"),
    ("POST", "/projects/{project_id}/rename"),
    ("POST", "/projects/{project_id}/archive"),
}

#: Path parameters that are not team objects, and why (see `_values_for`):
#: - {token} of /invite/{token}: the link's secret token *is* the credential (whoever holds it
#:   may join, by design); replaying team A's invite *id* in its place must find nothing.
#: - {token} of /bfl/webhook/{job_id}/{token}: BFL calls it without any session; the HMAC of
#:   the job id opens it, so team A's job id with any other token must be a 404.
NOT_TEAM_OBJECTS = {
    "token": "a secret link token, replayed as team A's invite id",
    "move": "a queue action (pause, resume, front, back) applied to A's job or batch",
}
#: The values replayed for parameters that name no object: every queue action.
NOT_TEAM_OBJECTS_VALUES = {"move": ["pause", "resume", "front", "back"]}


@dataclass
class TeamA:
    team: Team
    admin: Person
    member: Person
    manager: Person
    member_token: Caller
    ready: Job
    queued: Job
    failed: Job
    with_reference: Job
    reference_key: str
    invite: Invite
    session: AuthSession
    notice: Notice
    approval: ApprovalRequest
    board: Board
    project: Project

    @property
    def job_ids(self) -> list[uuid.UUID]:
        return [self.ready.id, self.queued.id, self.failed.id, self.with_reference.id]

    @property
    def user_ids(self) -> list[uuid.UUID]:
        return [self.admin.user.id, self.member.user.id, self.manager.user.id]

    def ids(self) -> list[str]:
        every = [
            self.team.id,
            *self.job_ids,
            *self.user_ids,
            self.member_token.token_id,
            self.invite.id,
            self.session.id,
            self.notice.id,
            self.notice.alert_id,
            self.approval.id,
            self.board.id,
            self.project.id,
        ]
        return [str(i) for i in every] + [self.reference_key.rsplit("/", 1)[-1].split(".")[0]]


@dataclass
class TeamB:
    person: Person
    caller: Caller
    browser: TestClient
    api: TestClient
    csrf: dict[str, str] = field(default_factory=dict)

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if path.startswith("/api/"):
            headers = {**self.caller.headers, **kwargs.pop("headers", {})}
            return self.api.request(method, path, headers=headers, **kwargs)
        headers = {**self.csrf, **kwargs.pop("headers", {})}
        return self.browser.request(method, path, headers=headers, **kwargs)


def _picture(fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (24, 16), (20, 90, 160)).save(buffer, format=fmt)
    return buffer.getvalue()


def _caller(db: Session, person: Person) -> Caller:
    issued = issue_token(db, user_id=person.user.id, team_id=person.team.id, name="walls")
    db.commit()
    return Caller(person=person, token_id=issued.token.id, secret=issued.secret)


@pytest.fixture
def no_rate_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Hundreds of API requests in a minute: a 429 would hide what a route really does."""
    monkeypatch.setenv("API_RATE_LIMIT_PER_MINUTE", "0")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def team_a(committed_db: Session) -> TeamA:
    db = committed_db
    team = make_team(db, name="Walled Garden Ltd")
    admin = make_person(db, team=team, role=Role.ADMIN)
    member = make_person(db, team=team, role=Role.MEMBER)
    manager = make_person(db, team=team, role=Role.MANAGER)
    admin.user.name, member.user.name = "Ottoline Quist", "Barnaby Fennimore"
    db.commit()
    member_token = _caller(db, member)
    project = create_project(
        db,
        Changer(team_id=team.id, user_id=admin.user.id, email=admin.user.email),
        name="Project Quincunx",
    )
    set_budget(
        db,
        team_id=team.id,
        user_id=None,
        project_id=project.id,
        monthly_credits=Decimal("700"),
        set_by=admin.user.id,
    )

    ready, _ = make_ready_job(db, member_token, prompt="a zanzibar lighthouse at dusk")
    queued = make_job(db, member_token, prompt="a quetzal harbour at dawn")
    failed = make_job(db, member_token, status=JobStatus.FAILED, prompt="an obsidian failure")
    ready.cost_credits = Decimal("4")
    record_charge(db, ready)
    db.add(Favourite(user_id=member.user.id, job_id=ready.id))
    db.add(Favourite(user_id=admin.user.id, job_id=ready.id))
    set_budget(
        db,
        team_id=team.id,
        user_id=member.user.id,
        monthly_credits=Decimal("500"),
        set_by=admin.user.id,
    )
    # A queued job made the studio's way: a stored reference image and a held reservation.
    (with_reference,) = create_jobs(
        db,
        user_id=member.user.id,
        team_id=team.id,
        model="flux-2-pro",
        params={"prompt": "a marmalade reference study"},
        reference_images=[_picture()],
    )
    reference_key = with_reference.params["input_image"]
    # flux-2-max for managers only, and the member's refused request waiting for approval.
    policy.set_rule(
        db,
        team_id=team.id,
        by=admin.user,
        role="member",
        allowed_models=["flux-2-pro"],
        max_count=2,
    )
    approval = approvals.ask(
        db,
        team_id=team.id,
        user_id=member.user.id,
        model="flux-2-max",
        params={"prompt": "a zanzibar lighthouse, approved please"},
    )
    messages.discard_pending(db)  # no worker runs here; nothing to wake
    _, invite = create_invite(db, team_id=team.id, created_by=admin.user, role=Role.MEMBER)
    _, session = start_session(db, member.user, team_id=team.id)
    # A second factor and a team policy that a replayed reset or toggle would change.
    enrolment = begin_setup(db, manager.user)
    confirm_setup(db, manager.user, pyotp.TOTP(enrolment.secret).now())
    team.require_two_factor = True
    board = Board(team_id=team.id, created_by_id=member.user.id, name="Zephyr Moodboard")
    db.add(board)
    db.flush()
    db.add(BoardItem(board_id=board.id, job_id=ready.id, added_by_id=member.user.id))
    # An alert addressed to the member: their unread notice.
    alert = fire(
        db,
        team_id=team.id,
        kind="budget",
        scope_type="person",
        scope_id=str(member.user.id),
        period="2026-11",
        threshold=80,
        title="Barnaby Fennimore's budget is at 80%",
        body="400 of 500 credits of Barnaby Fennimore's budget are spent.",
        details={},
        recipients=[member.user.id],
    )
    assert alert is not None
    notice = db.scalars(select(Notice).where(Notice.alert_id == alert.id)).one()
    db.commit()
    return TeamA(
        team=team,
        admin=admin,
        member=member,
        manager=manager,
        member_token=member_token,
        ready=ready,
        queued=queued,
        failed=failed,
        with_reference=with_reference,
        reference_key=reference_key,
        invite=invite,
        session=session,
        notice=notice,
        approval=approval,
        board=board,
        project=project,
    )


def _team_b(db: Session, role: Role) -> Iterator[TeamB]:
    person = make_person(db, team=make_team(db, name="Team B"), role=role)
    db.commit()
    caller = _caller(db, person)
    app = create_app()
    with (
        TestClient(app, base_url="https://testserver", follow_redirects=False) as browser,
        TestClient(app, base_url="https://testserver", follow_redirects=False) as api,
    ):
        csrf = sign_in(db, browser, person)
        yield TeamB(person=person, caller=caller, browser=browser, api=api, csrf=csrf)


@pytest.fixture(params=[Role.ADMIN, Role.MEMBER], ids=["b-admin", "b-member"])
def team_b(
    request: pytest.FixtureRequest, committed_db: Session, no_rate_limit: None
) -> Iterator[TeamB]:
    yield from _team_b(committed_db, request.param)


def _snapshot(db: Session, a: TeamA, b: TeamB) -> dict[str, Any]:
    """Everything of team A a replay could change, and what team B could gain from it."""
    db.expire_all()
    a_users = a.user_ids
    rows: dict[str, Any] = {
        "jobs": db.execute(
            select(
                Job.id,
                Job.status,
                Job.deleted_at,
                Job.user_id,
                Job.prompt,
                Job.team_id,
                Job.paused_at,
                Job.queue_front,
                Job.queue_key,
                Job.batch_id,
                Job.project_id,
            )
            .where(Job.team_id == a.team.id)
            .order_by(Job.id)
        ).all(),
        "favourites": db.execute(
            select(Favourite.user_id, Favourite.job_id)
            .where(Favourite.job_id.in_(a.job_ids))
            .order_by(Favourite.user_id)
        ).all(),
        "tokens": db.execute(
            select(ApiToken.id, ApiToken.revoked_at, ApiToken.user_id)
            .where(ApiToken.team_id == a.team.id)
            .order_by(ApiToken.id)
        ).all(),
        "memberships": db.execute(
            select(Membership.user_id, Membership.team_id, Membership.role)
            .where((Membership.team_id == a.team.id) | Membership.user_id.in_(a_users))
            .order_by(Membership.user_id, Membership.team_id)
        ).all(),
        "invites": db.execute(
            select(Invite.id, Invite.accepted_at, Invite.accepted_by_id)
            .where(Invite.team_id == a.team.id)
            .order_by(Invite.id)
        ).all(),
        "sessions": db.execute(
            select(AuthSession.id, AuthSession.team_id)
            .where(AuthSession.user_id.in_(a_users))
            .order_by(AuthSession.id)
        ).all(),
        "users": db.execute(
            select(
                User.id,
                User.name,
                User.email,
                User.password_hash,
                User.last_team_id,
                User.totp_secret_encrypted,
                User.totp_enabled_at,
            )
            .where(User.id.in_(a_users))
            .order_by(User.id)
        ).all(),
        "charges": db.execute(
            select(Charge.job_id, Charge.credits, Charge.project_id).where(
                Charge.team_id == a.team.id
            )
        ).all(),
        "reservations": db.execute(
            select(Reservation.job_id, Reservation.credits, Reservation.state)
            .where(Reservation.team_id == a.team.id)
            .order_by(Reservation.job_id)
        ).all(),
        "notices": db.execute(
            select(Notice.id, Notice.read_at).where(Notice.team_id == a.team.id)
        ).all(),
        "budgets": db.execute(
            select(Budget.user_id, Budget.project_id, Budget.monthly_credits)
            .where(Budget.team_id == a.team.id)
            .order_by(Budget.monthly_credits)
        ).all(),
        "projects": db.execute(
            select(Project.id, Project.name, Project.archived, Project.team_id)
            .where(Project.team_id == a.team.id)
            .order_by(Project.id)
        ).all(),
        "approvals": db.execute(
            select(ApprovalRequest.id, ApprovalRequest.status, ApprovalRequest.batch_id).where(
                ApprovalRequest.team_id == a.team.id
            )
        ).all(),
        "access_rules": db.execute(
            select(
                AccessRule.role,
                AccessRule.user_id,
                AccessRule.allowed_models,
                AccessRule.max_count,
            ).where(AccessRule.team_id == a.team.id)
        ).all(),
        "boards": db.execute(
            select(Board.id, Board.name, Board.cover_job_id, Board.updated_at)
            .where(Board.team_id == a.team.id)
            .order_by(Board.id)
        ).all(),
        "board_items": db.execute(
            select(BoardItem.board_id, BoardItem.job_id)
            .where(BoardItem.job_id.in_(a.job_ids))
            .order_by(BoardItem.board_id, BoardItem.job_id)
        ).all(),
        "b_boards": db.execute(select(Board.id).where(Board.team_id == b.person.team.id)).all(),
        "team_name": db.scalar(select(Team.name).where(Team.id == a.team.id)),
        "team_policy": db.scalar(select(Team.require_two_factor).where(Team.id == a.team.id)),
        "recovery_codes": db.execute(
            select(RecoveryCode.id, RecoveryCode.used_at)
            .where(RecoveryCode.user_id.in_(a_users))
            .order_by(RecoveryCode.id)
        ).all(),
        # Team B gains nothing either: no jobs copied from A's, no membership in A's team.
        "b_jobs": db.execute(select(Job.id).where(Job.team_id == b.person.team.id)).all(),
        "b_memberships": db.execute(
            select(Membership.team_id, Membership.role).where(
                Membership.user_id == b.person.user.id
            )
        ).all(),
        "b_session_team": db.scalars(
            select(AuthSession.team_id).where(AuthSession.user_id == b.person.user.id)
        ).all(),
    }
    return rows


def _values_for(param: str, a: TeamA) -> list[str]:
    """Team A's objects that a path parameter of this name can name."""
    by_name: dict[str, list[uuid.UUID]] = {
        "job_id": a.job_ids,
        "user_id": a.user_ids,
        "token_id": [a.member_token.token_id],
        "session_id": [a.session.id],
        "invite_id": [a.invite.id],
        "notice_id": [a.notice.id],
        "team_id": [a.team.id],
        "approval_id": [a.approval.id],
        "board_id": [a.board.id],
        "project_id": [a.project.id],
        # NOT_TEAM_OBJECTS: A's invite id where the secret link token belongs.
        "token": [a.invite.id],
        "batch_id": [j.batch_id for j in (a.queued, a.failed) if j.batch_id is not None],
    }
    if param in NOT_TEAM_OBJECTS_VALUES:
        return NOT_TEAM_OBJECTS_VALUES[param]
    if param == "sha256":
        # Reference images are named by content: team A's stored reference.
        return [a.reference_key.rsplit("/", 1)[-1].split(".")[0]]
    if param not in by_name:
        raise AssertionError(
            f"path parameter {{{param}}} is not in the team-wall map: add which of team A's "
            "objects it takes to _values_for in tests/test_team_walls.py"
        )
    return [str(v) for v in by_name[param]]


def _replays(calls: list[RouteCall], a: TeamA) -> Iterator[tuple[RouteCall, str]]:
    """Every route with path parameters, once for each combination of A's matching ids."""
    for call in calls:
        if not call.params:
            continue
        combos: list[dict[str, str]] = [{}]
        for param in call.params:
            combos = [{**c, param: v} for c in combos for v in _values_for(param, a)]
        for values in combos:
            yield call, call.fill(values)


#: Form fields and JSON bodies sent with every state change, so that no route stops at a
#: missing field before it looks anything up (role: a change either way would show).
_FORM = {"role": "manager", "name": "Renamed by team B", "email": "b@example.com"}


def _assert_nothing_of_a(response: httpx.Response, a: TeamA, where: str) -> None:
    text = response.text
    for secret in A_SECRETS:
        assert secret.lower() not in text.lower(), f"{where}: shows {secret!r}"
    for value in a.ids():
        assert value not in text, f"{where}: shows team A's id {value}"
    assert a.reference_key not in text, f"{where}: shows team A's stored reference key"


def test_the_route_map_is_not_empty_and_knows_every_parameter(team_a: TeamA) -> None:
    calls = route_calls(create_app())
    replayed = list(_replays(calls, team_a))
    templates = {call.path for call, _ in replayed}
    # Pages and the API alike, and every kind of object.
    for expected in (
        "/gallery/{job_id}",
        "/boards/{board_id}",
        "/api/v1/boards/{board_id}",
        "/api/v1/boards/{board_id}/images/{job_id}",
        "/api/v1/jobs/{job_id}",
        "/api/v1/tokens/{token_id}",
        "/team/members/{user_id}/role",
        "/account/sessions/{session_id}/end",
        "/team/invites/{invite_id}/revoke",
        "/team/members/{user_id}/two-factor/reset",
        "/notices/{notice_id}/read",
        "/api/v1/notices/{notice_id}/read",
    ):
        assert expected in templates
    # The API's gallery actions, each replayed (and so walled) like every other change.
    methods = {(call.method, call.path) for call, _ in replayed}
    for action in (
        ("PUT", "/api/v1/jobs/{job_id}/favourite"),
        ("DELETE", "/api/v1/jobs/{job_id}/favourite"),
        ("DELETE", "/api/v1/jobs/{job_id}"),
        ("POST", "/api/v1/jobs/{job_id}/vary"),
        ("POST", "/api/v1/jobs/{job_id}/project"),
        ("GET", "/api/v1/approvals/{approval_id}"),
        ("POST", "/api/v1/approvals/{approval_id}/approve"),
        ("POST", "/api/v1/approvals/{approval_id}/decline"),
        ("POST", "/approvals/{approval_id}/approve"),
        ("POST", "/approvals/{approval_id}/decline"),
    ):
        assert action in methods, action
    assert len(replayed) >= 60


def test_team_a_itself_reaches_its_objects(committed_db: Session, team_a: TeamA) -> None:
    """The control: the same ids work for their own team, so the 404s below mean the wall."""
    app = create_app()
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        sign_in(committed_db, client, team_a.member)
        assert "Barnaby Fennimore&#39;s budget is at 80%" in client.get("/notices").text
        for path in (
            f"/gallery/{team_a.ready.id}",
            f"/images/{team_a.ready.id}/thumb",
            f"/jobs/{team_a.queued.id}/card",
            f"/?from={team_a.with_reference.id}",
        ):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text[:200])
        assert "zanzibar lighthouse" in client.get("/gallery").text
        token = team_a.member_token.headers
        for path in (
            f"/api/v1/jobs/{team_a.ready.id}",
            f"/api/v1/images/{team_a.ready.id}/original",
            f"/api/v1/prompts/{team_a.failed.id}",
            f"/api/v1/approvals/{team_a.approval.id}",
        ):
            assert client.get(path, headers=token).status_code == 200, path


def test_every_route_replayed_with_team_a_ids_is_a_404_for_team_b(
    committed_db: Session, team_a: TeamA, team_b: TeamB
) -> None:
    before = _snapshot(committed_db, team_a, team_b)
    is_member = team_b.person.role is Role.MEMBER
    problems: list[str] = []
    count = 0
    for call, path in _replays(route_calls(create_app()), team_a):
        count += 1
        kwargs: dict[str, Any] = {}
        if call.method in ("POST", "PUT", "PATCH"):
            if call.is_api:
                kwargs["json"] = {}
            else:
                kwargs["data"] = _FORM
        response = team_b.send(call.method, path, **kwargs)
        allowed = {404}
        if is_member and (call.method, call.path) in ROLE_GATED_BEFORE_LOOKUP:
            allowed = {403, 404}
        where = f"{call.method} {path}"
        if response.status_code not in allowed:
            problems.append(f"{where} answered {response.status_code}: {response.text[:160]}")
            continue
        if call.is_api:
            assert response.json()["error"]["code"] in ("not_found", "forbidden"), where
        _assert_nothing_of_a(response, team_a, where)
    assert not problems, "\n".join(problems)
    assert count >= 60
    assert _snapshot(committed_db, team_a, team_b) == before


def test_query_and_form_ids_of_team_a_reveal_and_change_nothing(
    committed_db: Session, team_a: TeamA, team_b: TeamB
) -> None:
    before = _snapshot(committed_db, team_a, team_b)
    a_user = str(team_a.member.user.id)
    a_job = str(team_a.ready.id)
    b_is_manager = team_b.person.role.at_least(Role.MANAGER)

    # Lists filtered by one of A's people: empty, never A's work.
    for path, params in (
        ("/gallery", {"user": a_user}),
        ("/gallery/more", {"user": a_user}),
        ("/gallery", {"q": "zanzibar"}),
        ("/prompts", {"q": "zanzibar"}),
        ("/prompts", {"q": "quetzal", "view": "mine"}),
        ("/api/v1/jobs", {"user": a_user}),
        ("/api/v1/jobs", {"q": "zanzibar"}),
        ("/api/v1/prompts", {"user": a_user}),
        ("/api/v1/prompts", {"q": "obsidian"}),
        ("/generate/estimate", {"stored_reference": team_a.reference_key}),
        ("/", {"prompt": "", "model": "flux-2-pro"}),
        ("/queue", {}),
        ("/queue/rows", {}),
        ("/api/v1/queue", {}),
    ):
        response = team_b.send("GET", path, params=params)
        assert response.status_code == 200, (path, params, response.text[:200])
        _assert_nothing_of_a(response, team_a, f"GET {path} {params}")

    # Cost reports about one of A's people: 404 for managers, 403 (own figures only) for
    # members, and never a figure of A.
    expected = 404 if b_is_manager else 403
    for path in ("/costs/export.csv", "/api/v1/costs/ledger", "/api/v1/costs/summary"):
        response = team_b.send("GET", path, params={"user_id": a_user})
        assert response.status_code == expected, (path, response.status_code, response.text)
        _assert_nothing_of_a(response, team_a, f"GET {path}?user_id=A")

    # The audit log filtered by A's person or A's objects: nothing of A (members: 403). Team
    # A's log is not empty: its admin set a budget.
    assert committed_db.scalar(
        select(func.count()).select_from(AuditEntry).where(AuditEntry.team_id == team_a.team.id)
    )
    for path in (
        "/audit",
        "/audit/export.csv",
        "/audit/export.json",
        "/api/v1/audit",
        "/api/v1/audit/export.csv",
        "/api/v1/audit/export.json",
    ):
        by_a = team_b.send("GET", path, params={"person": a_user})
        assert by_a.status_code == (404 if b_is_manager else 403), (path, by_a.text[:200])
        _assert_nothing_of_a(by_a, team_a, f"GET {path}?person=A")
        mine = team_b.send("GET", path)
        assert mine.status_code == (200 if b_is_manager else 403), path
        _assert_nothing_of_a(mine, team_a, f"GET {path}")
    if b_is_manager:
        # A's ids as targets find nothing (the page echoes the filter, so read the API).
        for target in (a_user, str(team_a.team.id), "team"):
            found = team_b.send("GET", "/api/v1/audit", params={"target_id": target})
            assert found.json()["items"] == [] or all(
                e["actor_id"] != a_user and e["target_id"] != a_user for e in found.json()["items"]
            ), target

    # Notices: B's own list and count show nothing of A's notice.
    for path in ("/notices", "/notices/badge", "/api/v1/notices"):
        response = team_b.send("GET", path)
        assert response.status_code == 200, path
        _assert_nothing_of_a(response, team_a, f"GET {path}")
    # Reports, lists and new jobs naming one of A's projects: 404, never a figure of A.
    a_project = str(team_a.project.id)
    for path in (
        "/costs/export.csv",
        "/api/v1/costs/ledger",
        "/api/v1/costs/summary",
        "/api/v1/costs/review",
        "/costs/review",
    ):
        response = team_b.send("GET", path, params={"project": a_project})
        assert response.status_code == 404, (path, response.status_code, response.text)
        _assert_nothing_of_a(response, team_a, f"GET {path}?project=A")
    for path in ("/api/v1/jobs", "/api/v1/prompts", "/gallery", "/prompts"):
        listed = team_b.send("GET", path, params={"project": a_project})
        assert listed.status_code == 200, (path, listed.text[:200])
        _assert_nothing_of_a(listed, team_a, f"GET {path}?project=A")
    projects = team_b.send("GET", "/api/v1/projects")
    assert projects.status_code == 200
    _assert_nothing_of_a(projects, team_a, "GET /api/v1/projects")
    into_a = team_b.send(
        "POST",
        "/api/v1/jobs",
        json={"model": "flux-2-pro", "prompt": "borrowing", "project_id": a_project},
    )
    assert into_a.status_code == 404, into_a.text
    _assert_nothing_of_a(into_a, team_a, "POST /api/v1/jobs project_id=A")
    budget = team_b.send(
        "PUT", "/api/v1/costs/budgets", json={"project_id": a_project, "monthly_credits": "1"}
    )
    assert budget.status_code == (404 if b_is_manager else 403), budget.text[:200]

    # A job of A's as the template of the generate form.
    response = team_b.send("GET", "/", params={"from": a_job})
    assert response.status_code == 404
    _assert_nothing_of_a(response, team_a, "GET /?from=A")

    # Budgets for one of A's people: refused (404 for managers; members may not set any).
    page = team_b.send("POST", "/costs/budgets", data={"user_id": a_user, "monthly_credits": "1"})
    assert page.status_code == (404 if b_is_manager else 403), page.text[:200]
    api = team_b.send(
        "PUT", "/api/v1/costs/budgets", json={"user_id": a_user, "monthly_credits": "1"}
    )
    assert api.status_code == (404 if b_is_manager else 403), api.text[:200]

    # Access rules and quotas for one of A's people: 404 for managers, 403 for members.
    for method, path, body in (
        ("PUT", "/api/v1/access/rules", {"user_id": a_user, "max_count": 1}),
        ("PUT", "/api/v1/access/quotas", {"user_id": a_user, "monthly_credits": "1"}),
    ):
        answer = team_b.send(method, path, json=body)
        assert answer.status_code == (404 if b_is_manager else 403), (path, answer.text[:200])
        _assert_nothing_of_a(answer, team_a, f"{method} {path}")
    for path, form_data in (
        ("/access/rules", {"subject": a_user, "max_count": "1"}),
        ("/access/quotas", {"user_id": a_user, "monthly_credits": "1"}),
    ):
        answer = team_b.send("POST", path, data=form_data)
        assert answer.status_code == (404 if b_is_manager else 403), (path, answer.text[:200])
        _assert_nothing_of_a(answer, team_a, f"POST {path}")
    # A's waiting requests are not in B's lists.
    for path in ("/approvals", "/api/v1/approvals"):
        listed = team_b.send("GET", path)
        assert listed.status_code == 200, path
        _assert_nothing_of_a(listed, team_a, f"GET {path}")

    # Switching the session into A's team.
    switch = team_b.send("POST", "/teams/switch", data={"team_id": str(team_a.team.id)})
    assert switch.status_code == 404
    _assert_nothing_of_a(switch, team_a, "POST /teams/switch")

    # Reusing A's stored reference image: dropped by the form, refused by the API.
    form = team_b.send(
        "POST",
        "/generate",
        data={
            "model": "flux-2-pro",
            "prompt": "borrowing",
            "count": "1",
            "stored_reference": team_a.reference_key,
        },
        headers={"hx-request": "true"},
    )
    assert form.status_code == 200
    _assert_nothing_of_a(form, team_a, "POST /generate")
    borrowed = team_b.send(
        "POST",
        "/api/v1/jobs",
        json={
            "model": "flux-2-pro",
            "prompt": "borrowing",
            "params": {"input_image": team_a.reference_key},
        },
    )
    assert borrowed.status_code == 422
    assert borrowed.json()["error"]["fields"][0]["field"] == "params.input_image"
    messages.discard_pending(committed_db)

    _boards_and_bulk_reveal_and_change_nothing(team_a, team_b)

    after = _snapshot(committed_db, team_a, team_b)
    # The form's own job (without A's image) is the one thing B may have made.
    b_jobs = committed_db.scalars(select(Job).where(Job.team_id == team_b.person.team.id)).all()
    assert all("input_image" not in job.params for job in b_jobs)
    assert all(job.prompt == "borrowing" for job in b_jobs)
    after["b_jobs"] = before["b_jobs"]
    assert after == before


def _boards_and_bulk_reveal_and_change_nothing(a: TeamA, b: TeamB) -> None:
    """A's board as a filter, A's images and board in bulk actions and ZIPs: nothing of A."""
    a_board, a_jobs = str(a.board.id), [str(j) for j in a.job_ids]
    for path, params in (
        ("/gallery", {"board": a_board}),
        ("/gallery/more", {"board": a_board}),
        ("/api/v1/jobs", {"board": a_board}),
        ("/boards", {}),
        ("/api/v1/boards", {}),
    ):
        response = b.send("GET", path, params=params)
        assert response.status_code == 200, (path, response.text[:200])
        _assert_nothing_of_a(response, a, f"GET {path} {params}")
        if path == "/api/v1/jobs":
            assert response.json()["items"] == []
    # Onto A's board: the board is not found. B's own actions on A's images: each refused.
    page = b.send(
        "POST",
        "/gallery/bulk",
        data={"action": "board", "board_id": a_board, "job_ids": ",".join(a_jobs)},
        headers={"hx-request": "true"},
    )
    assert "was not found in this team" in page.text
    _assert_nothing_of_a(page, a, "POST /gallery/bulk onto A's board")
    for action in ("favourite", "delete"):
        api = b.send("POST", "/api/v1/images/bulk", json={"action": action, "job_ids": a_jobs})
        assert api.status_code == 200 and api.json()["changed"] == 0, api.text
        assert {r["reason"] for r in api.json()["refused"]} == {"not found in this team"}
    # Into A's project: the project is not found, named as the field at fault.
    a_project = str(a.project.id)
    moved = b.send(
        "POST",
        "/api/v1/images/bulk",
        json={"action": "project", "project_id": a_project, "job_ids": a_jobs},
    )
    assert moved.status_code == 404 and moved.json()["error"]["fields"][0]["field"] == "project_id"
    _assert_nothing_of_a(moved, a, "POST /api/v1/images/bulk into A's project")
    page = b.send(
        "POST",
        "/gallery/bulk",
        data={"action": "project", "project_id": a_project, "job_ids": ",".join(a_jobs)},
        headers={"hx-request": "true"},
    )
    assert "was not found in this team" in page.text
    _assert_nothing_of_a(page, a, "POST /gallery/bulk into A's project")
    # A's images into B's own project: each refused as not found.
    b_project = b.send("GET", "/api/v1/projects").json()[0]["id"]
    moved = b.send(
        "POST",
        "/api/v1/images/bulk",
        json={"action": "project", "project_id": b_project, "job_ids": a_jobs},
    )
    assert moved.status_code == 200 and moved.json()["changed"] == 0, moved.text
    assert {r["reason"] for r in moved.json()["refused"]} == {"not found in this team"}
    for job_id in a_jobs:
        one = b.send("POST", f"/api/v1/jobs/{job_id}/project", json={"project_id": b_project})
        assert one.status_code == 404, one.text
    everything = b.send(
        "POST", "/api/v1/images/bulk", json={"action": "favourite", "filters": {"board": a_board}}
    )
    assert everything.status_code == 422  # nothing matches: A's board holds nothing for B
    for door, kwargs in (
        ("/api/v1/images/archive", {"json": {"job_ids": a_jobs}}),
        ("/gallery/bulk/zip", {"data": {"job_ids": ",".join(a_jobs)}}),
    ):
        response = b.send("POST", door, **kwargs)
        assert response.status_code == 200, (door, response.text[:200])
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert archive.namelist() == ["manifest.csv", "manifest.json"]
            manifest = json.loads(archive.read("manifest.json"))
            assert manifest["images"] == []
            for secret in A_SECRETS:
                assert secret.encode() not in archive.read("manifest.csv")
