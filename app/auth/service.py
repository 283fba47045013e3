"""Business rules for people, teams and memberships."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.audit.service import record
from app.auth.models import AuthSession, Invite, Membership, Role, Team, User
from app.auth.tokens import revoke_tokens_of
from app.db import utcnow
from app.projects.service import create_default_project
from app.security import (
    hash_password,
    new_token,
    password_inputs,
    password_needs_rehash,
    password_problem,
    token_hash,
    verify_password,
)
from app.settings import get_settings

INVITE_LIFETIME = timedelta(days=7)


class AccountError(ValueError):
    """A request about accounts that cannot be carried out; the message says what to change."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InviteRefused(AccountError):
    """An invite link was tried with details that cannot join; counted against the link."""


class NotInTeam(LookupError):
    """The person, team, invite or session asked for is not within the caller's reach.

    Routes answer 404 for it, so nobody learns what exists in another team.
    """


def normalize_email(email: str) -> str:
    return email.strip()


def find_user_by_email(db: Session, email: str) -> User | None:
    stmt = select(User).where(func.lower(User.email) == normalize_email(email).lower())
    return db.scalars(stmt).first()


def create_team(db: Session, name: str) -> Team:
    name = name.strip()
    if not name:
        raise AccountError("team name is required", field="name")
    if len(name) > 120:
        raise AccountError("team name: use at most 120 characters", field="name")
    team = Team(name=name)
    db.add(team)
    db.flush()
    create_default_project(db, team_id=team.id)
    return team


def _check_email(email: str) -> None:
    local, _, domain = email.partition("@")
    if not local or not domain or len(email) > 320 or any(c.isspace() for c in email):
        raise AccountError("enter an email address like name@example.com", field="email")


def check_new_account(email: str, name: str, password: str, team_names: Sequence[str]) -> None:
    """AccountError naming the first field a new account with these details gets wrong
    (email shape, password strength, name length); whether the email is taken is not looked at."""
    _check_email(email)
    problem = password_problem(password, password_inputs(email, name, *team_names))
    if problem:
        raise AccountError(f"password: {problem}", field="password")
    if len(name.strip()) > 120:
        raise AccountError("name: use at most 120 characters", field="name")


def create_user(
    db: Session,
    *,
    email: str,
    name: str,
    password: str,
    is_superuser: bool = False,
    team_names: Sequence[str] = (),
) -> User:
    """A new person. The password must pass `password_problem`, with the email, the name and
    `team_names` (the team they join) counted as words it must not be built from."""
    email = normalize_email(email)
    check_new_account(email, name, password, team_names)
    if find_user_by_email(db, email) is not None:
        raise AccountError("an account with this email exists already", field="email")
    user = User(
        email=email,
        name=name.strip() or email.split("@")[0],
        password_hash=hash_password(password),
        is_superuser=is_superuser,
    )
    db.add(user)
    db.flush()
    return user


def add_member(db: Session, user: User, team: Team, role: Role = Role.MEMBER) -> Membership:
    membership = db.get(Membership, (user.id, team.id))
    if membership is None:
        membership = Membership(user_id=user.id, team_id=team.id, role=role.value)
        db.add(membership)
    else:
        membership.role = role.value
    if user.last_team_id is None:
        user.last_team_id = team.id
    db.flush()
    return membership


def membership_of(db: Session, *, user_id: uuid.UUID, team_id: uuid.UUID) -> Membership | None:
    return db.get(Membership, (user_id, team_id))


def user_count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(User)) or 0


# --- Signing in -------------------------------------------------------------------------------


@lru_cache
def _dummy_hash() -> str:
    # Verifying against this when the email is unknown makes that answer take as long as a
    # wrong password for a real account, so timing does not tell which emails exist.
    return hash_password(new_token(16))


def authenticate(db: Session, email: str, password: str) -> User | None:
    """The active person with this email and password, or None (the caller says only "wrong")."""
    user = find_user_by_email(db, email) if email.strip() else None
    if user is None:
        verify_password(_dummy_hash(), password)
        return None
    if not verify_password(user.password_hash, password) or not user.is_active:
        return None
    if password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        db.flush()
    return user


def teams_of(db: Session, user_id: uuid.UUID) -> list[tuple[Team, Role]]:
    """Every team the person belongs to with their role there, by team name."""
    rows = db.execute(
        select(Team, Membership.role)
        .join(Membership, Membership.team_id == Team.id)
        .where(Membership.user_id == user_id)
        .order_by(func.lower(Team.name), Team.id)
    ).all()
    return [(team, Role(role)) for team, role in rows]


def _starting_team(db: Session, user: User) -> uuid.UUID:
    if user.last_team_id is not None and membership_of(
        db, user_id=user.id, team_id=user.last_team_id
    ):
        return user.last_team_id
    first = db.scalar(
        select(Membership.team_id)
        .where(Membership.user_id == user.id)
        .order_by(Membership.created_at, Membership.team_id)
        .limit(1)
    )
    if first is None:
        raise AccountError(
            "your account is not in any team any more; ask a team admin for a new invite link"
        )
    return first


#: How long the password step of a sign-in waits for its second factor.
SECOND_FACTOR_WAIT = timedelta(minutes=10)


def start_session(
    db: Session,
    user: User,
    *,
    team_id: uuid.UUID | None = None,
    user_agent: str | None = None,
    ip_address: str | None = None,
    awaiting_second_factor: bool = False,
) -> tuple[str, AuthSession]:
    """A new signed-in session; returns the raw token for the cookie (stored only hashed).

    With `awaiting_second_factor` the session is only the password step: it lives 10 minutes
    and reaches nothing but the code form until `complete_second_factor` replaces it.
    """
    if team_id is None or membership_of(db, user_id=user.id, team_id=team_id) is None:
        team_id = _starting_team(db, user)
    settings = get_settings()
    now = utcnow()
    raw = new_token(32)
    lifetime = (
        SECOND_FACTOR_WAIT
        if awaiting_second_factor
        else timedelta(hours=settings.SESSION_MAX_HOURS)
    )
    session = AuthSession(
        token_hash=token_hash(raw),
        user_id=user.id,
        team_id=team_id,
        csrf_token=new_token(32),
        last_seen_at=now,
        expires_at=now + lifetime,
        user_agent=(user_agent or "")[:300] or None,
        ip_address=(ip_address or "")[:64] or None,
        awaiting_second_factor=awaiting_second_factor,
    )
    db.add(session)
    user.last_team_id = team_id
    db.flush()
    return raw, session


def session_awaiting_second_factor(db: Session, raw_token: str) -> tuple[AuthSession, User] | None:
    """The live password-only session behind a cookie, with its active person; else None."""
    row = db.execute(
        select(AuthSession, User)
        .join(User, User.id == AuthSession.user_id)
        .where(
            AuthSession.token_hash == token_hash(raw_token),
            AuthSession.awaiting_second_factor.is_(True),
            AuthSession.expires_at > utcnow(),
            User.is_active.is_(True),
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


def complete_second_factor(
    db: Session, pending: AuthSession, user: User
) -> tuple[str, AuthSession]:
    """The second factor passed: the password-only session ends and a full one with a new
    token starts (so the token seen before the code never becomes a signed-in one)."""
    end_session(db, pending.token_hash)
    return start_session(
        db,
        user,
        team_id=pending.team_id,
        user_agent=pending.user_agent,
        ip_address=pending.ip_address,
    )


def end_session(db: Session, token_hash_value: str) -> None:
    """Sign a browser out on the server: its row goes, so the cookie is worthless."""
    db.execute(delete(AuthSession).where(AuthSession.token_hash == token_hash_value))


def end_session_by_token(db: Session, raw_token: str) -> None:
    end_session(db, token_hash(raw_token))


def end_other_sessions(db: Session, user_id: uuid.UUID, keep: AuthSession | None = None) -> int:
    """Sign the person out everywhere except `keep`; returns how many sessions ended."""
    stmt = delete(AuthSession).where(AuthSession.user_id == user_id)
    if keep is not None:
        stmt = stmt.where(AuthSession.token_hash != keep.token_hash)
    return db.execute(stmt).rowcount or 0  # type: ignore[attr-defined]


def find_own_session(db: Session, *, user_id: uuid.UUID, session_id: uuid.UUID) -> AuthSession:
    """One of the person's own sessions by its public id; NotInTeam when it is not theirs."""
    session = db.scalar(
        select(AuthSession).where(AuthSession.user_id == user_id, AuthSession.id == session_id)
    )
    if session is None:
        raise NotInTeam("That session was not found; it may have ended already.")
    return session


def end_own_session(db: Session, *, user_id: uuid.UUID, session_id: uuid.UUID) -> None:
    """End one of the person's own sessions, found by its public id."""
    result = db.execute(
        delete(AuthSession).where(AuthSession.user_id == user_id, AuthSession.id == session_id)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotInTeam("That session was not found; it may have ended already.")


def sessions_of(db: Session, user_id: uuid.UUID) -> list[AuthSession]:
    """The person's sessions that are still live, most recently used first (password-only
    sign-ins waiting for their second factor included: they tell of a known password)."""
    settings = get_settings()
    now = utcnow()
    idle_since = now - timedelta(minutes=settings.SESSION_IDLE_MINUTES)
    return list(
        db.scalars(
            select(AuthSession)
            .where(
                AuthSession.user_id == user_id,
                AuthSession.expires_at > now,
                AuthSession.last_seen_at > idle_since,
            )
            .order_by(AuthSession.last_seen_at.desc())
        )
    )


#: Browser and system names looked for in a User-Agent, most specific first (Edge and Opera
#: also say "Chrome", Chrome also says "Safari").
_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def describe_user_agent(user_agent: str | None) -> str:
    """A short summary of a User-Agent header, e.g. "Firefox on Linux"; "Unknown browser"
    when nothing familiar is in it."""
    if not user_agent:
        return "Unknown browser"
    browser = next((name for mark, name in _BROWSERS if mark in user_agent), None)
    system = next((name for mark, name in _SYSTEMS if mark in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or user_agent[:40]


def purge_ended_sessions(db: Session, now: datetime | None = None) -> int:
    """Delete sessions past their absolute or idle timeout; returns how many went."""
    settings = get_settings()
    now = now or utcnow()
    idle_since = now - timedelta(minutes=settings.SESSION_IDLE_MINUTES)
    result = db.execute(
        delete(AuthSession).where(
            (AuthSession.expires_at <= now) | (AuthSession.last_seen_at <= idle_since)
        )
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


# --- The account page -------------------------------------------------------------------------


def password_is_right(user: User, password: str) -> bool:
    """Whether `password` is the person's current one (for re-authentication)."""
    return len(password) <= 4096 and verify_password(user.password_hash, password)


def _require_password(user: User, current_password: str) -> None:
    if not verify_password(user.password_hash, current_password):
        raise AccountError("your current password is not correct", field="current_password")


def change_password(db: Session, user: User, *, current_password: str, new_password: str) -> None:
    """New password after proving the current one. The caller ends and renews sessions."""
    _require_password(user, current_password)
    team_names = [team.name for team, _ in teams_of(db, user.id)]
    problem = password_problem(new_password, password_inputs(user.email, user.name, *team_names))
    if problem:
        raise AccountError(f"new password: {problem}", field="new_password")
    user.password_hash = hash_password(new_password)
    db.flush()


def change_email(db: Session, user: User, *, current_password: str, new_email: str) -> None:
    _require_password(user, current_password)
    email = normalize_email(new_email)
    _check_email(email)
    other = find_user_by_email(db, email)
    if other is not None and other.id != user.id:
        raise AccountError("another account uses this email already", field="email")
    user.email = email
    db.flush()


def change_name(db: Session, user: User, name: str) -> None:
    name = name.strip()
    if not name:
        raise AccountError("name: enter the name your team sees", field="name")
    if len(name) > 120:
        raise AccountError("name: use at most 120 characters", field="name")
    user.name = name
    db.flush()


def switch_team(db: Session, session: AuthSession, user: User, team_id: uuid.UUID) -> Team:
    """Move a signed-in session to another of the person's teams."""
    team = db.get(Team, team_id)
    if team is None or membership_of(db, user_id=user.id, team_id=team_id) is None:
        raise NotInTeam("That team was not found among your teams.")
    db.execute(
        update(AuthSession)
        .where(AuthSession.token_hash == session.token_hash)
        .values(team_id=team_id)
    )
    session.team_id = team_id
    user.last_team_id = team_id
    db.flush()
    return team


# --- Running a team ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    user: User
    role: Role
    joined_at: datetime


def team_members(db: Session, team_id: uuid.UUID) -> list[Member]:
    rows = db.execute(
        select(User, Membership.role, Membership.created_at)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.team_id == team_id)
        .order_by(func.lower(User.name), User.id)
    ).all()
    return [Member(user=u, role=Role(r), joined_at=at) for u, r, at in rows]


def _lock_team(db: Session, team_id: uuid.UUID) -> None:
    # Serializes role changes within a team so two admins demoting each other at the same
    # moment cannot leave it with none.
    db.execute(select(Team.id).where(Team.id == team_id).with_for_update())


def _admin_count(db: Session, team_id: uuid.UUID) -> int:
    return (
        db.scalar(
            select(func.count())
            .select_from(Membership)
            .where(Membership.team_id == team_id, Membership.role == Role.ADMIN.value)
        )
        or 0
    )


def change_role(
    db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID, role: Role, by: User
) -> Membership:
    """Give a member another role, audited as `by`'s "member.role_changed".

    Raises NotInTeam (not a member) or AccountError (field "role": the last admin).
    """
    _lock_team(db, team_id)
    membership = membership_of(db, user_id=user_id, team_id=team_id)
    if membership is None:
        raise NotInTeam("That person was not found in this team.")
    if (
        membership.role == Role.ADMIN.value
        and role != Role.ADMIN
        and _admin_count(db, team_id) <= 1
    ):
        raise AccountError(
            "a team needs at least one admin; make someone else admin first", field="role"
        )
    before = membership.role
    membership.role = role.value
    db.flush()
    if before != role.value:
        record(
            db,
            team_id=team_id,
            actor_id=by.id,
            actor_email=by.email,
            action="member.role_changed",
            target_type="user",
            target_id=user_id,
            before={"role": before},
            after={"role": role.value},
        )
    return membership


def remove_member(db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID, by: User) -> None:
    """Take a person out of the team, ending their sessions and tokens there; audited as
    `by`'s "member.removed". Raises NotInTeam or AccountError (field "user": the last admin).
    """
    _lock_team(db, team_id)
    membership = membership_of(db, user_id=user_id, team_id=team_id)
    if membership is None:
        raise NotInTeam("That person was not found in this team.")
    if membership.role == Role.ADMIN.value and _admin_count(db, team_id) <= 1:
        raise AccountError(
            "this is the team's last admin; make someone else admin first", field="user"
        )
    db.delete(membership)
    # Their browsers working in this team stop at once; other teams are untouched.
    db.execute(
        delete(AuthSession).where(AuthSession.user_id == user_id, AuthSession.team_id == team_id)
    )
    # Their API tokens for this team end for good: if they are invited back later, the old
    # tokens stay revoked (the right to use them ended with the membership).
    tokens = revoke_tokens_of(db, user_id=user_id, team_id=team_id)
    user = db.get(User, user_id)
    if user is not None and user.last_team_id == team_id:
        user.last_team_id = None
    db.flush()
    record(
        db,
        team_id=team_id,
        actor_id=by.id,
        actor_email=by.email,
        action="member.removed",
        target_type="user",
        target_id=user_id,
        before={"email": user.email if user else None, "role": membership.role},
        after={"tokens_revoked": tokens},
    )


def create_team_for(db: Session, user: User, name: str) -> Team:
    """A new team with `user` as its admin."""
    team = create_team(db, name)
    add_member(db, user, team, Role.ADMIN)
    record(
        db,
        team_id=team.id,
        actor_id=user.id,
        actor_email=user.email,
        action="team.created",
        target_type="team",
        target_id=team.id,
        after={"name": team.name, "admin": user.email},
    )
    return team


# --- Invitations ------------------------------------------------------------------------------


def create_invite(
    db: Session,
    *,
    team_id: uuid.UUID,
    created_by: User,
    role: Role,
    email: str | None = None,
) -> tuple[str, Invite]:
    """A single-use invite link token (returned raw once, stored hashed) valid for 7 days."""
    email = normalize_email(email or "") or None
    if email is not None:
        _check_email(email)
    raw = new_token(32)
    invite = Invite(
        team_id=team_id,
        email=email,
        role=role.value,
        token_hash=token_hash(raw),
        created_by_id=created_by.id,
        expires_at=utcnow() + INVITE_LIFETIME,
    )
    db.add(invite)
    db.flush()
    record(
        db,
        team_id=team_id,
        actor_id=created_by.id,
        actor_email=created_by.email,
        action="invite.created",
        target_type="invite",
        target_id=invite.id,
        after={"email": email, "role": role.value, "expires_at": invite.expires_at},
    )
    return raw, invite


def open_invites(db: Session, team_id: uuid.UUID) -> list[Invite]:
    return list(
        db.scalars(
            select(Invite)
            .where(
                Invite.team_id == team_id,
                Invite.accepted_at.is_(None),
                Invite.expires_at > utcnow(),
            )
            .order_by(Invite.created_at.desc())
        )
    )


def revoke_invite(db: Session, *, team_id: uuid.UUID, invite_id: uuid.UUID, by: User) -> None:
    """Withdraw an unused invite, audited as `by`'s "invite.revoked"; NotInTeam otherwise."""
    gone = db.execute(
        delete(Invite)
        .where(Invite.id == invite_id, Invite.team_id == team_id, Invite.accepted_at.is_(None))
        .returning(Invite.email, Invite.role, Invite.expires_at)
    ).first()
    if gone is None:
        raise NotInTeam("That invite was not found in this team; it may be used already.")
    record(
        db,
        team_id=team_id,
        actor_id=by.id,
        actor_email=by.email,
        action="invite.revoked",
        target_type="invite",
        target_id=invite_id,
        before={"email": gone.email, "role": gone.role, "expires_at": gone.expires_at},
    )


_INVITE_GONE = (
    "This invite link is not valid: it was used, withdrawn or has expired. Ask for a new one."
)
_INVITE_WORN_OUT = (
    "This invite link was tried too many times and no longer works. "
    "Ask the person who invited you for a new one."
)
#: The one answer to a refused invite whatever the email: it never says whether an account
#: with that email exists (each such answer also counts against the link).
INVITE_REFUSED = (
    "no new account can be made with that email and password; if you have an account here "
    "already, join with it under 'I have an account' on this page"
)


def _invite_usable() -> list[Any]:
    return [
        Invite.accepted_at.is_(None),
        Invite.expires_at > utcnow(),
        Invite.refused_attempts < get_settings().INVITE_MAX_ATTEMPTS,
    ]


def find_invite(db: Session, raw_token: str) -> tuple[Invite, Team]:
    """The usable invite behind a link, with its team; NotInTeam when used, expired, unknown
    or tried INVITE_MAX_ATTEMPTS times without success (each with its own message)."""
    row = db.execute(
        select(Invite, Team)
        .join(Team, Team.id == Invite.team_id)
        .where(
            Invite.token_hash == token_hash(raw_token),
            Invite.accepted_at.is_(None),
            Invite.expires_at > utcnow(),
        )
    ).first()
    if row is None:
        raise NotInTeam(_INVITE_GONE)
    if row[0].refused_attempts >= get_settings().INVITE_MAX_ATTEMPTS:
        raise NotInTeam(_INVITE_WORN_OUT)
    return row[0], row[1]


def record_invite_refusal(db: Session, raw_token: str) -> None:
    """Count one refused try against the link (no effect on a used or unknown link)."""
    db.execute(
        update(Invite)
        .where(Invite.token_hash == token_hash(raw_token), Invite.accepted_at.is_(None))
        .values(refused_attempts=Invite.refused_attempts + 1)
    )


def _claim_invite(db: Session, raw_token: str, user_id: uuid.UUID | None) -> Invite:
    # One guarded UPDATE: of two people racing for one link, exactly one gets it.
    invite_id = db.scalar(
        update(Invite)
        .where(Invite.token_hash == token_hash(raw_token), *_invite_usable())
        .values(accepted_at=utcnow(), accepted_by_id=user_id)
        .returning(Invite.id)
    )
    if invite_id is None:
        raise NotInTeam(_INVITE_GONE)
    invite = db.get(Invite, invite_id, populate_existing=True)
    assert invite is not None
    return invite


def accept_invite(db: Session, raw_token: str, user: User) -> Team:
    """A signed-in person joins the invite's team (a role they already hold there is kept
    when it is higher)."""
    invite, team = find_invite(db, raw_token)
    if invite.email and invite.email.lower() != user.email.lower():
        raise AccountError(
            f"this invite is for {invite.email}; sign out and open the link again, "
            "or ask for an invite to your own email",
            field="email",
        )
    invite = _claim_invite(db, raw_token, user.id)
    role = Role(invite.role)
    existing = membership_of(db, user_id=user.id, team_id=team.id)
    if existing is None or not Role(existing.role).at_least(role):
        before = None if existing is None else {"role": existing.role}
        add_member(db, user, team, role)
        _record_joined(db, invite, user, before)
    return team


def _record_joined(db: Session, invite: Invite, user: User, before: dict[str, str] | None) -> None:
    """The audit entry of a person joining through an invite: the invite's author let them in."""
    inviter = db.get(User, invite.created_by_id) if invite.created_by_id else None
    record(
        db,
        team_id=invite.team_id,
        actor_id=user.id,
        actor_email=user.email,
        action="member.added",
        target_type="user",
        target_id=user.id,
        before=before,
        after={
            "role": invite.role,
            "invite": invite.id,
            "invited_by": inviter.email if inviter else None,
        },
    )


def accept_invite_new_user(
    db: Session, raw_token: str, *, name: str, email: str, password: str
) -> tuple[User, Team]:
    """A new person creates an account from an invite and joins its team."""
    invite, team = find_invite(db, raw_token)
    if invite.email:
        email = invite.email
    # A savepoint: a refused account (email taken, short password) must not use up the link.
    # The password is judged before the email is looked up, and a taken email gets the same
    # answer as any other refusal to join, so the form tells nobody which accounts exist.
    with db.begin_nested():
        if find_user_by_email(db, email) is not None:
            check_new_account(normalize_email(email), name, password, [team.name])
            raise InviteRefused(INVITE_REFUSED, field="email")
        user = create_user(db, email=email, name=name, password=password, team_names=[team.name])
        invite = _claim_invite(db, raw_token, user.id)
        add_member(db, user, team, Role(invite.role))
        _record_joined(db, invite, user, None)
    return user, team


def accept_invite_existing_user(
    db: Session, raw_token: str, *, email: str, password: str
) -> tuple[User | None, Team | None]:
    """A person with an account (say, one removed from their only team) joins with its password.

    Returns (None, None) when the email and password do not match an active account (the caller
    says only "wrong" and counts a failed sign-in); NotInTeam when the link is not usable;
    AccountError when the invite is for another email or the account has a second factor.
    """
    find_invite(db, raw_token)
    user = authenticate(db, email, password)
    if user is None:
        return None, None
    if user.has_two_factor:
        # The password alone must not change an account that signs in with a second factor.
        raise AccountError(
            "this account signs in with a second factor: sign in first, then open this link again",
            field="email",
        )
    return user, accept_invite(db, raw_token, user)
