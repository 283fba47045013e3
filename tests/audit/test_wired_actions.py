"""Every admin and manager action leaves one audit entry with its values before and after,
written in the same transaction as the change (a refused change leaves none)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal

from sqlalchemy.orm import Session

from app.auth.models import Role
from app.auth.service import accept_invite_new_user, create_invite, membership_of
from app.auth.tokens import issue_token
from app.jobs.models import Job, JobStatus
from tests.audit.conftest import Browser, entries
from tests.factories import make_person

SignIn = Callable[..., Browser]


def _job(db: Session, team_id: uuid.UUID, user_id: uuid.UUID, status: JobStatus) -> Job:
    job = Job(
        id=uuid.uuid4(),
        team_id=team_id,
        user_id=user_id,
        status=status.value,
        model="flux-2-pro",
        prompt="a lighthouse",
        params={"prompt": "a lighthouse", "width": 1024, "height": 1024},
        width=1024,
        height=1024,
        estimated_credits=Decimal("3"),
    )
    db.add(job)
    db.commit()
    return job


def test_role_change_is_audited_with_before_and_after(db: Session, browser: SignIn) -> None:
    admin = make_person(db, role=Role.ADMIN)
    member = make_person(db, admin.team)
    answer = browser(admin).post(f"/team/members/{member.user.id}/role", {"role": "manager"})
    assert answer.status_code == 303
    (entry,) = entries(db, "member.role_changed")
    assert entry.team_id == admin.team.id
    assert (entry.actor_id, entry.actor_email) == (admin.user.id, admin.user.email)
    assert (entry.target_type, entry.target_id) == ("user", str(member.user.id))
    assert entry.before == {"role": "member"} and entry.after == {"role": "manager"}


def test_a_refused_role_change_leaves_no_entry(db: Session, browser: SignIn) -> None:
    admin = make_person(db, role=Role.ADMIN)
    answer = browser(admin).post(f"/team/members/{admin.user.id}/role", {"role": "member"})
    assert answer.status_code == 409  # the last admin
    assert entries(db, "member.role_changed") == []


def test_member_removal_is_audited(db: Session, browser: SignIn) -> None:
    admin = make_person(db, role=Role.ADMIN)
    member = make_person(db, admin.team, Role.MANAGER)
    issue_token(db, user_id=member.user.id, team_id=admin.team.id, name="ci")
    db.commit()
    assert browser(admin).post(f"/team/members/{member.user.id}/remove").status_code == 303
    assert membership_of(db, user_id=member.user.id, team_id=admin.team.id) is None
    (entry,) = entries(db, "member.removed")
    assert entry.actor_id == admin.user.id and entry.target_id == str(member.user.id)
    assert entry.before == {"email": member.user.email, "role": "manager"}
    assert entry.after == {"tokens_revoked": 1}


def test_invites_created_revoked_and_accepted_are_audited(db: Session, browser: SignIn) -> None:
    admin = make_person(db, role=Role.ADMIN)
    page = browser(admin).post("/team/invites", {"email": "new@example.com", "role": "manager"})
    assert page.status_code == 201
    (created,) = entries(db, "invite.created")
    assert created.actor_id == admin.user.id and created.before is None
    assert created.after is not None
    assert (created.after["email"], created.after["role"]) == ("new@example.com", "manager")
    answer = browser(admin).post(f"/team/invites/{created.target_id}/revoke")
    assert answer.status_code == 303
    (revoked,) = entries(db, "invite.revoked")
    assert revoked.target_id == created.target_id and revoked.after is None
    assert revoked.before is not None and revoked.before["email"] == "new@example.com"

    raw, invite = create_invite(db, team_id=admin.team.id, created_by=admin.user, role=Role.MEMBER)
    user, _ = accept_invite_new_user(
        db, raw, name="Newcomer", email="newcomer@example.com", password="correct horse battery"
    )
    (joined,) = entries(db, "member.added")
    assert (joined.actor_id, joined.target_id) == (user.id, str(user.id))
    assert joined.before is None
    assert joined.after == {
        "role": "member",
        "invite": str(invite.id),
        "invited_by": admin.user.email,
    }


def test_two_factor_reset_and_policy_are_audited(db: Session, browser: SignIn) -> None:
    admin = make_person(db, role=Role.ADMIN)
    member = make_person(db, admin.team)
    signed_in = browser(admin)
    reset = signed_in.post(f"/team/members/{member.user.id}/two-factor/reset")
    assert reset.status_code == 303
    (entry,) = entries(db, "two_factor.reset")
    assert entry.target_id == str(member.user.id)
    assert entry.before == {"two_factor": False} and entry.after == {"two_factor": False}
    assert signed_in.post("/team/two-factor", {"required": "on"}).status_code == 303
    (policy,) = entries(db, "team.two_factor_policy")
    assert policy.before == {"require_two_factor": False}
    assert policy.after == {"require_two_factor": True}


def test_budgets_set_changed_and_removed_are_audited(db: Session, browser: SignIn) -> None:
    manager = make_person(db, role=Role.MANAGER)
    member = make_person(db, manager.team)
    signed_in = browser(manager)
    for credits in ("500", "750"):
        form = {"user_id": str(member.user.id), "monthly_credits": credits}
        assert signed_in.post("/costs/budgets", form).status_code == 303
    assert signed_in.post("/costs/budgets", {"monthly_credits": "1000"}).status_code == 303
    first, second, team = entries(db, "budget.set")

    def credits(values: dict[str, object] | None) -> Decimal | None:
        return None if values is None else Decimal(str(values["monthly_credits"]))

    assert (first.actor_id, first.target_id) == (manager.user.id, f"person:{member.user.id}")
    assert first.before is None and credits(first.after) == 500
    assert (credits(second.before), credits(second.after)) == (500, 750)
    assert (team.target_id, credits(team.after)) == ("team", 1000)
    form = {"user_id": str(member.user.id), "monthly_credits": ""}
    assert signed_in.post("/costs/budgets", form).status_code == 303
    (removed,) = entries(db, "budget.remove")
    assert removed.actor_id == manager.user.id and removed.after is None
    assert credits(removed.before) == 750


def test_token_revocation_is_audited(db: Session, client, browser: SignIn) -> None:  # type: ignore[no-untyped-def]
    person = make_person(db, role=Role.MANAGER)
    issued = issue_token(db, user_id=person.user.id, team_id=person.team.id, name="laptop")
    db.commit()
    answer = client.delete(
        f"/api/v1/tokens/{issued.token.id}", headers={"authorization": f"Bearer {issued.secret}"}
    )
    assert answer.status_code in (200, 204), answer.text
    (entry,) = entries(db, "token.revoked")
    assert (entry.target_type, entry.target_id) == ("api_token", str(issued.token.id))
    assert entry.before == {"name": "laptop", "owner": person.user.email, "revoked": False}
    assert entry.after == {"revoked": True}


def test_an_admin_revoking_a_members_tokens_is_audited(
    db: Session, client, browser: SignIn
) -> None:  # type: ignore[no-untyped-def]
    admin = make_person(db, role=Role.ADMIN)
    member = make_person(db, admin.team)
    issued = issue_token(db, user_id=member.user.id, team_id=admin.team.id, name="laptop")
    issue_token(db, user_id=member.user.id, team_id=admin.team.id, name="ci")
    db.commit()
    assert browser(admin).post(f"/team/members/{member.user.id}/tokens/revoke").status_code == 303
    gone = client.get("/api/v1/me", headers={"authorization": f"Bearer {issued.secret}"})
    assert gone.status_code == 401
    (entry,) = entries(db, "token.revoked_for_member")
    assert (entry.actor_id, entry.target_id) == (admin.user.id, str(member.user.id))
    assert entry.before == {"owner": member.user.email, "live_tokens": 2}
    assert entry.after == {"live_tokens": 0}
    # Managers may not; another team's person is not found.
    manager = make_person(db, admin.team, Role.MANAGER)
    assert browser(manager).post(f"/team/members/{member.user.id}/tokens/revoke").status_code == 403
    stranger = make_person(db)
    answer = browser(admin).post(f"/team/members/{stranger.user.id}/tokens/revoke")
    assert answer.status_code == 404
    assert len(entries(db, "token.revoked_for_member")) == 1


def test_a_manager_deleting_or_cancelling_someone_elses_job_is_audited(
    db: Session, browser: SignIn
) -> None:
    manager = make_person(db, role=Role.MANAGER)
    member = make_person(db, manager.team)
    ready = _job(db, manager.team.id, member.user.id, JobStatus.READY)
    queued = _job(db, manager.team.id, member.user.id, JobStatus.QUEUED)
    own = _job(db, manager.team.id, manager.user.id, JobStatus.READY)
    signed_in = browser(manager)
    assert signed_in.post(f"/gallery/{ready.id}/delete").status_code in (200, 303)
    assert signed_in.post(f"/gallery/{own.id}/delete").status_code in (200, 303)
    (deleted,) = entries(db, "job.deleted")  # one's own job is no admin action
    assert deleted.target_id == str(ready.id) and deleted.actor_id == manager.user.id
    assert deleted.before == {"owner": member.user.email, "status": "ready", "deleted": False}
    assert deleted.after == {"deleted": True}
    assert signed_in.post(f"/jobs/{queued.id}/cancel").status_code == 200
    (cancelled,) = entries(db, "job.cancelled")
    assert cancelled.target_id == str(queued.id)
    assert cancelled.before == {"owner": member.user.email, "status": "queued"}
    assert cancelled.after == {"status": "cancelled"}
