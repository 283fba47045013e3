"""Who is calling: the signed-in person or API token, their team and role, and CSRF checks."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from app.auth.models import ApiToken, AuthSession, Membership, Role, Team, User
from app.auth.two_factor import setup_required
from app.db import utcnow
from app.deps import SessionDep
from app.errors import Forbidden, NotAuthenticated, StudioError
from app.limits import read_form
from app.security import constant_time_equal, new_token, signature, token_hash
from app.settings import get_settings

CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
#: Touching last_seen_at on every request would write on every page view; once a minute is enough.
_TOUCH_EVERY = timedelta(minutes=1)


def session_cookie_name() -> str:
    # The __Host- prefix makes browsers refuse the cookie unless it is Secure, host-only, path=/.
    return "__Host-studio_session" if get_settings().COOKIE_SECURE else "studio_session"


def form_cookie_name() -> str:
    """The cookie behind anti-forgery tokens of forms shown before sign-in (login, invites)."""
    return "__Host-studio_form" if get_settings().COOKIE_SECURE else "studio_form"


def set_session_cookie(response: Response, raw_token: str) -> None:
    settings = get_settings()
    response.set_cookie(
        session_cookie_name(),
        raw_token,
        max_age=settings.SESSION_MAX_HOURS * 3600,
        path="/",
        secure=settings.COOKIE_SECURE,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response) -> None:
    settings = get_settings()
    response.delete_cookie(
        session_cookie_name(),
        path="/",
        secure=settings.COOKIE_SECURE,
        httponly=True,
        samesite="lax",
    )


_FORM_PURPOSE = "pre-session-form"
_FORM_COOKIE_MAX_AGE = 12 * 3600
_NONCE = re.compile(r"[A-Za-z0-9_-]{32,64}")


class FormToken:
    """Anti-forgery for forms shown to someone not signed in yet: a signed double submit.

    A random nonce sits in an HttpOnly cookie; the form carries HMAC(SECRET_KEY, nonce). A
    forger can neither read the cookie nor compute the HMAC for a nonce it planted, so a
    cross-site post (login CSRF, forced account creation) is refused without any session.
    """

    def __init__(self, request: Request) -> None:
        existing = request.cookies.get(form_cookie_name(), "")
        # Reuse a well-formed nonce so forms open in several tabs all stay valid.
        self._fresh = _NONCE.fullmatch(existing) is None
        self.nonce = new_token(32) if self._fresh else existing

    @property
    def value(self) -> str:
        """What the form's hidden `csrf_token` field carries."""
        return signature(_FORM_PURPOSE, self.nonce)

    def attach(self, response: Response) -> None:
        """Send the cookie with the page that shows the form (only when it is new)."""
        if not self._fresh:
            return
        settings = get_settings()
        response.set_cookie(
            form_cookie_name(),
            self.nonce,
            max_age=_FORM_COOKIE_MAX_AGE,
            path="/",
            secure=settings.COOKIE_SECURE,
            httponly=True,
            samesite="lax",
        )

    @staticmethod
    def is_valid(request: Request, sent: str | None) -> bool:
        nonce = request.cookies.get(form_cookie_name())
        if not nonce or not sent:
            return False
        return constant_time_equal(sent, signature(_FORM_PURPOSE, nonce))


@dataclass(frozen=True)
class PersonView:
    id: uuid.UUID
    name: str
    email: str


@dataclass(frozen=True)
class TeamView:
    id: uuid.UUID
    name: str


@dataclass(frozen=True)
class ActorView:
    """The caller as plain values, safe to read after the request's database session ended.

    Error pages are rendered after that (the session is rolled back and closed first), when
    reading the caller's rows would fail; they show the nav from this instead. It offers the
    attributes the layout reads from an Actor.
    """

    user: PersonView
    team: TeamView
    role: Role
    csrf_token: str
    via_token: bool

    @property
    def user_id(self) -> uuid.UUID:
        return self.user.id

    @property
    def team_id(self) -> uuid.UUID:
        return self.team.id

    @property
    def is_manager(self) -> bool:
        return self.role.at_least(Role.MANAGER)

    @property
    def is_admin(self) -> bool:
        return self.role.at_least(Role.ADMIN)


@dataclass(frozen=True)
class Actor:
    """The caller of a request: a person acting in one team with one role."""

    user: User
    team: Team
    role: Role
    session: AuthSession | None = None
    token: ApiToken | None = None

    @property
    def user_id(self) -> uuid.UUID:
        return self.user.id

    @property
    def team_id(self) -> uuid.UUID:
        return self.team.id

    @property
    def is_manager(self) -> bool:
        return self.role.at_least(Role.MANAGER)

    @property
    def is_admin(self) -> bool:
        return self.role.at_least(Role.ADMIN)

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token if self.session is not None else ""

    def view(self) -> ActorView:
        """Plain copies of what pages show about the caller (read while the rows are loaded)."""
        return ActorView(
            user=PersonView(id=self.user.id, name=self.user.name, email=self.user.email),
            team=TeamView(id=self.team.id, name=self.team.name),
            role=self.role,
            csrf_token=self.csrf_token,
            via_token=self.token is not None,
        )


def session_is_live(session: AuthSession, now: datetime) -> bool:
    idle = timedelta(minutes=get_settings().SESSION_IDLE_MINUTES)
    return session.expires_at > now and session.last_seen_at + idle > now


def _caller_row(
    credential: type[AuthSession] | type[ApiToken], digest: str
) -> Select[Any, User, Team, str]:
    """The credential, its active person, and their team and role there, in one round trip."""
    return (
        select(credential, User, Team, Membership.role)
        .join(User, User.id == credential.user_id)
        .join(
            Membership,
            (Membership.user_id == credential.user_id) & (Membership.team_id == credential.team_id),
        )
        .join(Team, Team.id == credential.team_id)
        .where(credential.token_hash == digest, User.is_active.is_(True))
    )


def _from_token(db: Session, raw: str) -> Actor:
    """The caller behind an API token; NotAuthenticated (401) saying why it does not work."""
    row = db.execute(_caller_row(ApiToken, token_hash(raw))).first()
    if row is None or row[0].revoked_at is not None:
        # Unknown, revoked, or its owner left the team (which revokes it too).
        raise NotAuthenticated("The API token is unknown or revoked; create a new one.")
    token, user, team, role = row
    now = utcnow()
    if token.expires_at is not None and token.expires_at <= now:
        raise NotAuthenticated(
            f"The API token expired on {token.expires_at:%Y-%m-%d %H:%M} UTC; "
            "create a new one on the API tokens page (/account/tokens)."
        )
    if token.last_used_at is None or now - token.last_used_at > _TOUCH_EVERY:
        db.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
        token.last_used_at = now
    return Actor(user=user, team=team, role=Role(role), token=token)


def _from_session(db: Session, raw: str) -> Actor | None:
    row = db.execute(_caller_row(AuthSession, token_hash(raw))).first()
    if row is None:
        return None
    session, user, team, role = row
    if session.awaiting_second_factor:
        # Only the password step passed: nothing but the code form (which reads the cookie
        # itself) may treat this browser as signed in.
        return None
    now = utcnow()
    if not session_is_live(session, now):
        # Timed-out rows are refused here and deleted by service.purge_ended_sessions; a
        # delete here would be rolled back with the request that NotAuthenticated ends.
        return None
    if now - session.last_seen_at > _TOUCH_EVERY:
        db.execute(
            update(AuthSession)
            .where(AuthSession.token_hash == session.token_hash)
            .values(last_seen_at=now)
        )
    return Actor(user=user, team=team, role=Role(role), session=session)


def load_actor(request: Request, db: Session) -> Actor | None:
    """The caller, from a Bearer API token or the session cookie; None when signed out."""
    cached: Actor | None = getattr(request.state, "actor", None)
    if cached is not None:
        return cached
    actor: Actor | None = None
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        actor = _from_token(db, credentials.strip())
    else:
        raw = request.cookies.get(session_cookie_name())
        if raw:
            actor = _from_session(db, raw)
    request.state.actor = actor
    # Captured now, while the rows are loaded: error pages need it after the session ended.
    request.state.actor_view = actor.view() if actor is not None else None
    return actor


#: Where a browser goes when its team's policy asks for a second factor it does not have yet.
TWO_FACTOR_SETUP_PAGE = "/account/two-factor"


class TwoFactorSetupRequired(StudioError):
    """The team asks its managers and admins for a second factor; pages send them to set it up."""

    #: The error handler redirects browsers here instead of showing an error page.
    redirect_to = TWO_FACTOR_SETUP_PAGE

    def __init__(self) -> None:
        super().__init__(
            403,
            "two_factor_setup_required",
            "This team asks managers and admins to use two-factor sign-in; "
            f"set it up at {TWO_FACTOR_SETUP_PAGE} first.",
        )


def _require_policy_met(actor: Actor | None) -> Actor | None:
    # Browser sessions only: API tokens keep working, they were made by a signed-in person
    # and are revoked separately.
    if (
        actor is not None
        and actor.session is not None
        and setup_required(actor.team, actor.user, actor.role)
    ):
        raise TwoFactorSetupRequired()
    return actor


def optional_actor(request: Request, db: SessionDep) -> Actor | None:
    return _require_policy_met(load_actor(request, db))


def current_actor(request: Request, db: SessionDep) -> Actor:
    actor = load_actor(request, db)
    if actor is None:
        raise NotAuthenticated()
    _require_policy_met(actor)
    return actor


def actor_before_policy(request: Request, db: SessionDep) -> Actor:
    """The caller, even when the team's two-factor policy is not met yet: only for the pages
    that set the second factor up, and signing out."""
    actor = load_actor(request, db)
    if actor is None:
        raise NotAuthenticated()
    return actor


def optional_actor_before_policy(request: Request, db: SessionDep) -> Actor | None:
    return load_actor(request, db)


async def sent_csrf_token(request: Request) -> str | None:
    """The anti-forgery token a request carries: the X-CSRF-Token header or the form field."""
    sent = request.headers.get(CSRF_HEADER)
    if sent:
        return sent
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        # Starlette caches the parsed form, so the route's Form(...) parameters still work.
        form = await read_form(request)
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


class CsrfFailed(StudioError):
    def __init__(self) -> None:
        super().__init__(
            403,
            "csrf_failed",
            "This form has expired or did not come from the studio; reload the page and retry.",
        )


async def check_session_csrf(request: Request, session: AuthSession) -> None:
    """Refuse a state change that does not carry this session's anti-forgery token."""
    sent = await sent_csrf_token(request)
    if not sent or not constant_time_equal(sent, session.csrf_token):
        raise CsrfFailed()


async def csrf_protect(request: Request, actor: Annotated[Actor, Depends(current_actor)]) -> Actor:
    """State changes from a browser session must carry the session's anti-forgery token.

    API tokens are exempt: a browser never attaches them on its own.
    """
    if request.method in ("GET", "HEAD", "OPTIONS") or actor.session is None:
        return actor
    await check_session_csrf(request, actor.session)
    return actor


class SessionRequired(StudioError):
    def __init__(self) -> None:
        super().__init__(
            403,
            "session_required",
            "Change accounts, teams and members from a signed-in browser; "
            "an API token cannot do that.",
        )


async def session_protect(
    request: Request, actor: Annotated[Actor, Depends(csrf_protect)]
) -> Actor:
    """Account changes (password, email, members, invites, teams) need a browser session.

    An API token is a narrower credential: if it leaks, it must not be able to take the
    account over or reshape the team, so such callers are refused before anything is read.
    """
    if actor.session is None:
        raise SessionRequired()
    return actor


def require_role(role: Role) -> Callable[[Actor], Actor]:
    """A dependency that lets through callers whose role in the team is at least `role`.

    It checks the anti-forgery token too (a no-op for GET), so a manager-only POST is never
    left unprotected by choosing this dependency instead of ChangingActor.
    """

    def dependency(actor: Annotated[Actor, Depends(csrf_protect)]) -> Actor:
        if not actor.role.at_least(role):
            who = {Role.ADMIN: "an admin", Role.MANAGER: "a manager or admin"}.get(role, "a member")
            raise Forbidden(
                f"Only {who} of this team can do that; your role here is {actor.role.value}."
            )
        return actor

    return dependency


async def csrf_protect_before_policy(
    request: Request, actor: Annotated[Actor, Depends(actor_before_policy)]
) -> Actor:
    """Like session_protect, for the two-factor setup pages a policy-bound caller may use."""
    if actor.session is None:
        raise SessionRequired()
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        await check_session_csrf(request, actor.session)
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]
#: The two-factor setup pages: a browser session, reachable before the team's policy is met.
SetupActor = Annotated[Actor, Depends(csrf_protect_before_policy)]
OptionalActor = Annotated[Actor | None, Depends(optional_actor)]
#: Use on every route that changes something: authenticates and checks the CSRF token.
ChangingActor = Annotated[Actor, Depends(csrf_protect)]
#: Use on routes that change the account or the team: a session and its CSRF token, no API token.
SessionActor = Annotated[Actor, Depends(session_protect)]
ManagerActor = Annotated[Actor, Depends(require_role(Role.MANAGER))]
AdminActor = Annotated[Actor, Depends(require_role(Role.ADMIN))]
