"""Pages for signing in and out, the account page, the team page and invitation links."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth import service, two_factor
from app.auth.deps import (
    TWO_FACTOR_SETUP_PAGE,
    Actor,
    CsrfFailed,
    CurrentActor,
    FormToken,
    OptionalActor,
    SessionActor,
    SessionRequired,
    SetupActor,
    check_session_csrf,
    clear_session_cookie,
    optional_actor_before_policy,
    session_cookie_name,
    set_session_cookie,
)
from app.auth.models import AuthSession, Role, User
from app.auth.service import AccountError, InviteRefused, NotInTeam
from app.auth.throttle import LoginThrottle
from app.auth.tokens import live_token_count, revoke_member_tokens, revoke_tokens_of
from app.deps import SessionDep
from app.errors import Forbidden, NotFound
from app.limits import read_form
from app.security import constant_time_equal
from app.settings import get_settings
from app.templating import templates

router = APIRouter(include_in_schema=False)

FormStr = Annotated[str, Form()]
WRONG_CREDENTIALS = "The email or password is wrong."

#: Messages shown after a redirect, chosen by a fixed key so a link cannot inject text.
NOTICES = {
    "name": "Your name was saved.",
    "email": "Your email was changed.",
    "password": "Your password was changed. Every other browser was signed out.",
    "password_tokens": "Your password was changed. Every other browser was signed out and "
    "your API tokens were revoked.",
    "session": "That browser was signed out.",
    "sessions": "Every other browser was signed out.",
    "switched": "You switched team.",
    "team": "The new team is ready; you are its admin.",
    "joined": "You joined the team.",
    "role": "The role was changed.",
    "removed": "The person was removed from the team.",
    "revoked": "The invite was withdrawn.",
    "two-factor-off": "Two-factor sign-in is off. Your recovery codes no longer work.",
    "two-factor-reset": "Their two-factor sign-in was removed; they set it up again.",
    "tokens-revoked": "Their API tokens for this team were revoked.",
    "two-factor-policy": "The team's two-factor rule was saved.",
}


def safe_next(target: str | None) -> str:
    """A same-site path to go to after signing in; anything else (another host, a scheme,
    `//host`, backslashes, control characters) becomes "/" so the login is no open redirect."""
    if not target or len(target) > 2000:
        return "/"
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def client_address(request: Request) -> str:
    # The client as app.ops.proxies resolved it: the direct peer, or behind a proxy listed in
    # TRUSTED_PROXIES the right-most untrusted X-Forwarded-For hop (never a spoofable header).
    return request.client.host if request.client else "unknown"


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("done", ""))


def _redirect(target: str, done: str | None = None) -> RedirectResponse:
    if done:
        target += ("&" if "?" in target else "?") + f"done={done}"
    return RedirectResponse(target, status_code=303)


def _user_agent(request: Request) -> str | None:
    return request.headers.get("user-agent")


# --- Signing in and out -----------------------------------------------------------------------


def _login_form(
    request: Request,
    *,
    next_path: str,
    email: str = "",
    error: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    actor: Actor | None = None,
) -> Response:
    form = FormToken(request)
    response = templates.TemplateResponse(
        request,
        "auth/login.html",
        {
            "actor": actor,
            "csrf_token": form.value,
            "next": next_path,
            "email": email,
            "error": error,
        },
        status_code=status_code,
        headers=headers,
    )
    form.attach(response)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, db: SessionDep, actor: OptionalActor, next: str = "/") -> Response:
    # A browser whose password step waits for its code goes back to the code form (it can
    # cancel there); a signed-in visitor sees the form too (to sign in as someone else), and
    # signing in replaces the current session.
    if actor is None and _pending(request, db) is not None:
        return _redirect(f"/login/code?next={quote(safe_next(next))}")
    return _login_form(request, next_path=safe_next(next), actor=actor)


@router.post("/login")
def login(
    request: Request,
    db: SessionDep,
    email: FormStr = "",
    password: FormStr = "",
    next: FormStr = "/",
    csrf_token: FormStr = "",
) -> Response:
    target = safe_next(next)
    email = email.strip()[:320]
    refused = _form_refusal(request, target, email, password, csrf_token)
    if refused is not None:
        return refused
    address = client_address(request)
    throttle = LoginThrottle()
    wait = throttle.wait_seconds(email, address)
    if wait:
        return _too_many(request, target, email, wait)
    # An absurdly long password is never right; refuse it without hashing megabytes.
    user = service.authenticate(db, email, password) if len(password) <= 4096 else None
    if user is None:
        wait = throttle.record_failure(email, address)
        if wait:
            return _too_many(request, target, email, wait, prefix=WRONG_CREDENTIALS + " ")
        return _login_form(
            request, next_path=target, email=email, error=WRONG_CREDENTIALS, status_code=400
        )
    throttle.record_success(email, address)
    return _signed_in(request, db, user, target, address)


def _form_refusal(
    request: Request, target: str, email: str, password: str, csrf_token: str
) -> Response | None:
    """The sign-in form again with what to change, or None when the form is complete."""
    if not FormToken.is_valid(request, csrf_token):
        return _login_form(
            request,
            next_path=target,
            email=email,
            error="This sign-in form had expired; it is fresh now, please sign in again.",
            status_code=403,
        )
    if not email or not password:
        return _login_form(
            request,
            next_path=target,
            email=email,
            error="Enter your email and your password.",
            status_code=400,
        )
    return None


def _signed_in(
    request: Request, db: SessionDep, user: User, target: str, address: str | None
) -> Response:
    """Start `user`'s session after a right password: on to `target`, or to the code step."""
    # A new id at every sign-in: whatever session cookie the browser had before is ended,
    # so an id planted before login can never become a signed-in one.
    previous = request.cookies.get(session_cookie_name())
    if previous:
        service.end_session_by_token(db, previous)
    try:
        raw, _ = service.start_session(
            db,
            user,
            user_agent=_user_agent(request),
            ip_address=address,
            awaiting_second_factor=user.has_two_factor,
        )
    except AccountError:
        # The password was right but the person belongs to no team (say, they were removed
        # from their only one): say so, and how to come back, instead of a bare refusal.
        invite = target if target.startswith("/invite/") else None
        return templates.TemplateResponse(
            request,
            "auth/no_team.html",
            {"actor": None, "email": user.email, "invite": invite},
            status_code=403,
        )
    if user.has_two_factor:
        response = RedirectResponse(f"/login/code?next={quote(target)}", status_code=303)
    else:
        response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, raw)
    return response


def code_throttle() -> LoginThrottle:
    """The throttle for second-factor codes: counted per account from every address."""
    return LoginThrottle(account_wide=True)


def second_factor_identity(email: str) -> str:
    """The throttle's account key for code attempts: apart from password attempts, so a right
    password (which clears those) never clears the count of wrong codes."""
    return f"second-factor:{email}"


def _code_form(
    request: Request,
    *,
    csrf_token: str,
    next_path: str,
    error: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    return templates.TemplateResponse(
        request,
        "auth/login_code.html",
        {"actor": None, "csrf_token": csrf_token, "next": next_path, "error": error},
        status_code=status_code,
        headers=headers,
    )


def _pending(request: Request, db: SessionDep) -> tuple[AuthSession, User] | None:
    """This browser's password-step session waiting for its code, with its person."""
    raw = request.cookies.get(session_cookie_name())
    return service.session_awaiting_second_factor(db, raw) if raw else None


@router.get("/login/code", response_class=HTMLResponse)
def login_code_page(request: Request, db: SessionDep, next: str = "/") -> Response:
    pending = _pending(request, db)
    if pending is None:
        return _redirect(f"/login?next={quote(safe_next(next))}")
    session, _ = pending
    return _code_form(request, csrf_token=session.csrf_token, next_path=safe_next(next))


@router.post("/login/code")
def login_code(
    request: Request,
    db: SessionDep,
    code: FormStr = "",
    next: FormStr = "/",
    csrf_token: FormStr = "",
) -> Response:
    target = safe_next(next)
    pending = _pending(request, db)
    if pending is None:
        # Waited too long, or signed out meanwhile: the password step starts again.
        return _redirect(f"/login?next={quote(target)}")
    session, user = pending
    if not csrf_token or not constant_time_equal(csrf_token, session.csrf_token):
        raise CsrfFailed()
    address = client_address(request)
    identity = second_factor_identity(user.email)
    throttle = code_throttle()
    wait = throttle.wait_seconds(identity, address)
    if wait:
        return _code_form(
            request,
            csrf_token=session.csrf_token,
            next_path=target,
            error=f"Too many wrong codes; try again in {wait} seconds.",
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    if not two_factor.check_second_factor(db, user, code.strip()):
        wait = throttle.record_failure(identity, address)
        error = "That code is not right (or was used already); type the newest code."
        if wait:
            return _code_form(
                request,
                csrf_token=session.csrf_token,
                next_path=target,
                error=f"{error} Too many wrong codes; try again in {wait} seconds.",
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        return _code_form(
            request, csrf_token=session.csrf_token, next_path=target, error=error, status_code=400
        )
    throttle.record_success(identity, address)
    raw, _ = service.complete_second_factor(db, session, user)
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, raw)
    return response


def _too_many(request: Request, target: str, email: str, wait: int, prefix: str = "") -> Response:
    unit = "second" if wait == 1 else "seconds"
    return _login_form(
        request,
        next_path=target,
        email=email,
        error=f"{prefix}Too many sign-in attempts; try again in {wait} {unit}.",
        status_code=429,
        headers={"Retry-After": str(wait)},
    )


async def _signed_in_or_none(
    request: Request, actor: Annotated[Actor | None, Depends(optional_actor_before_policy)]
) -> Actor | None:
    # Before the team's two-factor policy: a person sent to set it up can still sign out.
    if actor is not None and actor.session is not None:
        await check_session_csrf(request, actor.session)
    return actor


@router.post("/logout")
def logout(
    request: Request,
    db: SessionDep,
    actor: Annotated[Actor | None, Depends(_signed_in_or_none)],
) -> Response:
    if actor is not None and actor.session is not None:
        service.end_session(db, actor.session.token_hash)
    else:
        # A sign-in abandoned at the code form ends here too.
        pending = _pending(request, db)
        if pending is not None:
            service.end_session(db, pending[0].token_hash)
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(response)
    return response


def _sentence(exc: Exception) -> str:
    text = str(exc)
    return (text[:1].upper() + text[1:]).rstrip(".") + "."


# --- The account page -------------------------------------------------------------------------


def _account_page(
    request: Request,
    db: SessionDep,
    actor: Actor,
    *,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    context: dict[str, Any] = {
        "actor": actor,
        "notice": _notice(request),
        "errors": errors or {},
        "sessions": service.sessions_of(db, actor.user_id),
        "current_session_id": actor.session.id if actor.session else None,
        "teams": service.teams_of(db, actor.user_id),
        "describe_user_agent": service.describe_user_agent,
        "two_factor_on": actor.user.has_two_factor,
        "live_tokens": live_token_count(db, actor.user_id),
    }
    return templates.TemplateResponse(
        request, "account/index.html", context, status_code=status_code, headers=headers
    )


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, db: SessionDep, actor: CurrentActor) -> Response:
    return _account_page(request, db, actor)


@router.post("/account/name")
def account_name(
    request: Request, db: SessionDep, actor: SessionActor, name: FormStr = ""
) -> Response:
    try:
        service.change_name(db, actor.user, name)
    except AccountError as exc:
        return _account_page(request, db, actor, errors={"name": _sentence(exc)}, status_code=400)
    return _redirect("/account", "name")


def _password_guard(
    request: Request, db: SessionDep, actor: Actor, section: str
) -> LoginThrottle | Response:
    """Current-password checks share the sign-in throttle, so a borrowed session cannot be
    used to guess the password at full speed."""
    throttle = LoginThrottle()
    wait = throttle.wait_seconds(actor.user.email, client_address(request))
    if wait:
        return _account_page(
            request,
            db,
            actor,
            errors={section: f"Too many attempts; try again in {wait} seconds."},
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    return throttle


@router.post("/account/password")
def account_password(
    request: Request,
    db: SessionDep,
    actor: SessionActor,
    current_password: FormStr = "",
    new_password: FormStr = "",
    new_password_again: FormStr = "",
    revoke_tokens: FormStr = "",
) -> Response:
    if new_password != new_password_again:
        return _account_page(
            request,
            db,
            actor,
            errors={"password": "The two new passwords differ; type the same one twice."},
            status_code=400,
        )
    guard = _password_guard(request, db, actor, "password")
    if isinstance(guard, Response):
        return guard
    try:
        service.change_password(
            db, actor.user, current_password=current_password, new_password=new_password
        )
    except AccountError as exc:
        if exc.field == "current_password":
            guard.record_failure(actor.user.email, client_address(request))
        return _account_page(
            request, db, actor, errors={"password": _sentence(exc)}, status_code=400
        )
    # Every session ends, this one included; this browser gets a fresh one at once.
    service.end_other_sessions(db, actor.user_id)
    # A changed password often means a leak: the form offers (ticked) to end the API tokens,
    # in every team, too.
    revoked = revoke_tokens_of(db, user_id=actor.user_id) if revoke_tokens else 0
    raw, _ = service.start_session(
        db,
        actor.user,
        team_id=actor.team_id,
        user_agent=_user_agent(request),
        ip_address=client_address(request),
    )
    response = _redirect("/account", "password_tokens" if revoked else "password")
    set_session_cookie(response, raw)
    return response


@router.post("/account/email")
def account_email(
    request: Request,
    db: SessionDep,
    actor: SessionActor,
    email: FormStr = "",
    current_password: FormStr = "",
) -> Response:
    guard = _password_guard(request, db, actor, "email")
    if isinstance(guard, Response):
        return guard
    old_email = actor.user.email
    try:
        service.change_email(db, actor.user, current_password=current_password, new_email=email)
    except AccountError as exc:
        if exc.field == "current_password":
            guard.record_failure(old_email, client_address(request))
        return _account_page(request, db, actor, errors={"email": _sentence(exc)}, status_code=400)
    return _redirect("/account", "email")


def _reauthenticated(
    request: Request, db: SessionDep, actor: Actor, current_password: str
) -> Response | None:
    """Ending another browser's session asks for the password again (ASVS 7.5.2), so a
    borrowed session cannot sign the owner out everywhere; None when it was right."""
    guard = _password_guard(request, db, actor, "sessions")
    if isinstance(guard, Response):
        return guard
    if service.password_is_right(actor.user, current_password):
        return None
    guard.record_failure(actor.user.email, client_address(request))
    return _account_page(
        request,
        db,
        actor,
        errors={"sessions": "To end another session, type your current password correctly."},
        status_code=400,
    )


@router.post("/account/sessions/end-others")
def account_end_other_sessions(
    request: Request, db: SessionDep, actor: SessionActor, current_password: FormStr = ""
) -> Response:
    refused = _reauthenticated(request, db, actor, current_password)
    if refused is not None:
        return refused
    service.end_other_sessions(db, actor.user_id, keep=actor.session)
    return _redirect("/account", "sessions")


@router.post("/account/sessions/{session_id}/end")
def account_end_session(
    request: Request,
    session_id: str,
    db: SessionDep,
    actor: SessionActor,
    current_password: FormStr = "",
) -> Response:
    wanted = _uuid(session_id, "That session")
    try:
        service.find_own_session(db, user_id=actor.user_id, session_id=wanted)
    except NotInTeam as exc:
        raise NotFound("That session") from exc
    if actor.session is not None and actor.session.id == wanted:
        # Ending this very session is signing out: no password needed.
        service.end_session(db, actor.session.token_hash)
        response = _redirect("/login")
        clear_session_cookie(response)
        return response
    refused = _reauthenticated(request, db, actor, current_password)
    if refused is not None:
        return refused
    service.end_own_session(db, user_id=actor.user_id, session_id=wanted)
    return _redirect("/account", "session")


# --- Two-factor sign-in ------------------------------------------------------------------------


def _two_factor_page(
    request: Request,
    db: SessionDep,
    actor: Actor,
    *,
    enrolment: two_factor.Enrolment | None = None,
    recovery_codes: list[str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    context: dict[str, Any] = {
        "actor": actor,
        "errors": errors or {},
        "enabled": actor.user.has_two_factor,
        "enrolment": enrolment,
        "recovery_codes": recovery_codes,
        "codes_left": two_factor.recovery_codes_left(db, actor.user_id),
        "required": two_factor.setup_required(actor.team, actor.user, actor.role),
        "team_requires": actor.team.require_two_factor,
    }
    return templates.TemplateResponse(
        request,
        "account/two_factor.html",
        context,
        status_code=status_code,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


@router.get(TWO_FACTOR_SETUP_PAGE, response_class=HTMLResponse)
def two_factor_page(request: Request, db: SessionDep, actor: SetupActor) -> Response:
    return _two_factor_page(request, db, actor)


@router.post(TWO_FACTOR_SETUP_PAGE + "/setup")
def two_factor_setup(request: Request, db: SessionDep, actor: SetupActor) -> Response:
    try:
        enrolment = two_factor.begin_setup(db, actor.user)
    except AccountError as exc:
        return _two_factor_page(
            request, db, actor, errors={"setup": _sentence(exc)}, status_code=409
        )
    return _two_factor_page(request, db, actor, enrolment=enrolment)


def _code_guard(
    request: Request, db: SessionDep, actor: Actor, section: str, **page: Any
) -> LoginThrottle | Response:
    """Code checks on the account pages share the sign-in throttle for codes."""
    throttle = code_throttle()
    wait = throttle.wait_seconds(second_factor_identity(actor.user.email), client_address(request))
    if wait:
        return _two_factor_page(
            request,
            db,
            actor,
            errors={section: f"Too many wrong codes; try again in {wait} seconds."},
            status_code=429,
            headers={"Retry-After": str(wait)},
            **page,
        )
    return throttle


@router.post(TWO_FACTOR_SETUP_PAGE + "/confirm")
def two_factor_confirm(
    request: Request, db: SessionDep, actor: SetupActor, code: FormStr = ""
) -> Response:
    enrolment = two_factor.pending_enrolment(actor.user)
    guard = _code_guard(request, db, actor, "setup", enrolment=enrolment)
    if isinstance(guard, Response):
        return guard
    try:
        codes = two_factor.confirm_setup(db, actor.user, code)
    except AccountError as exc:
        guard.record_failure(second_factor_identity(actor.user.email), client_address(request))
        return _two_factor_page(
            request,
            db,
            actor,
            enrolment=two_factor.pending_enrolment(actor.user),
            errors={"setup": _sentence(exc)},
            status_code=400,
        )
    return _two_factor_page(request, db, actor, recovery_codes=codes, status_code=201)


@router.post(TWO_FACTOR_SETUP_PAGE + "/recovery-codes")
def two_factor_recovery_codes(
    request: Request, db: SessionDep, actor: SessionActor, code: FormStr = ""
) -> Response:
    guard = _code_guard(request, db, actor, "recovery")
    if isinstance(guard, Response):
        return guard
    try:
        codes = two_factor.regenerate_recovery_codes(db, actor.user, code)
    except AccountError as exc:
        guard.record_failure(second_factor_identity(actor.user.email), client_address(request))
        return _two_factor_page(
            request, db, actor, errors={"recovery": _sentence(exc)}, status_code=400
        )
    return _two_factor_page(request, db, actor, recovery_codes=codes, status_code=201)


@router.post(TWO_FACTOR_SETUP_PAGE + "/disable")
def two_factor_disable(
    request: Request,
    db: SessionDep,
    actor: SessionActor,
    current_password: FormStr = "",
    code: FormStr = "",
) -> Response:
    address = client_address(request)
    throttle, codes = LoginThrottle(), code_throttle()
    wait = max(
        throttle.wait_seconds(actor.user.email, address),
        codes.wait_seconds(second_factor_identity(actor.user.email), address),
    )
    if wait:
        return _two_factor_page(
            request,
            db,
            actor,
            errors={"disable": f"Too many attempts; try again in {wait} seconds."},
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    try:
        two_factor.disable(db, actor.user, current_password=current_password, code=code)
    except AccountError as exc:
        if exc.field == "current_password":
            throttle.record_failure(actor.user.email, address)
        else:
            codes.record_failure(second_factor_identity(actor.user.email), address)
        return _two_factor_page(
            request, db, actor, errors={"disable": _sentence(exc)}, status_code=400
        )
    return _redirect("/account", "two-factor-off")


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise NotFound(what) from exc


# --- Teams ------------------------------------------------------------------------------------


@router.post("/teams/switch")
def switch_team(
    db: SessionDep,
    actor: SessionActor,
    team_id: FormStr = "",
    next: FormStr = "/",
) -> Response:
    if actor.session is None:
        raise Forbidden("Switch teams in the browser; an API token belongs to one team.")
    try:
        service.switch_team(db, actor.session, actor.user, _uuid(team_id, "That team"))
    except NotInTeam as exc:
        raise NotFound("That team") from exc
    return _redirect(safe_next(next), "switched")


def _require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise Forbidden(
            "Only an admin of this team can manage its members and invites; "
            f"your role here is {actor.role.value}. Ask one of the team's admins."
        )


def _team_page(
    request: Request,
    db: SessionDep,
    actor: Actor,
    *,
    errors: dict[str, str] | None = None,
    invite_link: str | None = None,
    status_code: int = 200,
) -> Response:
    context: dict[str, Any] = {
        "actor": actor,
        "notice": _notice(request),
        "errors": errors or {},
        "members": service.team_members(db, actor.team_id),
        "invites": service.open_invites(db, actor.team_id),
        "roles": [r.value for r in Role],
        "invite_link": invite_link,
    }
    return templates.TemplateResponse(
        request, "account/team.html", context, status_code=status_code
    )


@router.get("/team", response_class=HTMLResponse)
def team_page(request: Request, db: SessionDep, actor: CurrentActor) -> Response:
    _require_admin(actor)
    return _team_page(request, db, actor)


def _role(value: str) -> Role | None:
    try:
        return Role(value)
    except ValueError:
        return None


@router.post("/team/members/{user_id}/role")
def team_change_role(
    request: Request, user_id: str, db: SessionDep, actor: SessionActor, role: FormStr = ""
) -> Response:
    _require_admin(actor)
    member_id = _uuid(user_id, "That person")
    new_role = _role(role)
    if new_role is None:
        return _team_page(
            request,
            db,
            actor,
            errors={"members": "Role: choose member, manager or admin."},
            status_code=400,
        )
    try:
        service.change_role(
            db, team_id=actor.team_id, user_id=member_id, role=new_role, by=actor.user
        )
    except NotInTeam as exc:
        raise NotFound("That person") from exc
    except AccountError as exc:
        return _team_page(request, db, actor, errors={"members": _sentence(exc)}, status_code=409)
    if member_id == actor.user_id and new_role != Role.ADMIN:
        return _redirect("/account", "role")
    return _redirect("/team", "role")


@router.post("/team/members/{user_id}/remove")
def team_remove_member(
    request: Request, user_id: str, db: SessionDep, actor: SessionActor
) -> Response:
    _require_admin(actor)
    member_id = _uuid(user_id, "That person")
    try:
        service.remove_member(db, team_id=actor.team_id, user_id=member_id, by=actor.user)
    except NotInTeam as exc:
        raise NotFound("That person") from exc
    except AccountError as exc:
        return _team_page(request, db, actor, errors={"members": _sentence(exc)}, status_code=409)
    if member_id == actor.user_id:
        return _redirect("/")
    return _redirect("/team", "removed")


@router.post("/team/members/{user_id}/tokens/revoke")
def team_revoke_member_tokens(user_id: str, db: SessionDep, actor: SessionActor) -> Response:
    """An admin ends every API token a member holds for this team."""
    _require_admin(actor)
    try:
        revoke_member_tokens(
            db, team_id=actor.team_id, user_id=_uuid(user_id, "That person"), by=actor.user
        )
    except LookupError as exc:
        raise NotFound("That person") from exc
    return _redirect("/team", "tokens-revoked")


@router.post("/team/members/{user_id}/two-factor/reset")
def team_reset_two_factor(user_id: str, db: SessionDep, actor: SessionActor) -> Response:
    _require_admin(actor)
    try:
        two_factor.reset_for_member(
            db, team_id=actor.team_id, user_id=_uuid(user_id, "That person"), by=actor.user
        )
    except NotInTeam as exc:
        raise NotFound("That person") from exc
    return _redirect("/team", "two-factor-reset")


@router.post("/team/two-factor")
def team_two_factor_policy(db: SessionDep, actor: SessionActor, required: FormStr = "") -> Response:
    _require_admin(actor)
    two_factor.set_team_policy(db, actor.team, required=required == "on", by=actor.user)
    # The admin who turns it on without a second factor is sent to set one up at once.
    return _redirect("/team", "two-factor-policy")


#: Why no invite link can be made: never built from the request's Host header, which the
#: caller chooses.
NO_PUBLIC_URL = (
    "Invite links need the studio's address: set PUBLIC_URL to the URL people open the "
    "studio at (for example https://studio.example.com) and restart it."
)


@router.post("/team/invites")
def team_invite(
    request: Request,
    db: SessionDep,
    actor: SessionActor,
    email: FormStr = "",
    role: FormStr = "member",
) -> Response:
    _require_admin(actor)
    base = get_settings().link_base_url
    if base is None:
        return _team_page(request, db, actor, errors={"invite": NO_PUBLIC_URL}, status_code=409)
    invite_role = _role(role)
    if invite_role is None:
        return _team_page(
            request,
            db,
            actor,
            errors={"invite": "Role: choose member, manager or admin."},
            status_code=400,
        )
    try:
        raw, _ = service.create_invite(
            db, team_id=actor.team_id, created_by=actor.user, role=invite_role, email=email
        )
    except AccountError as exc:
        return _team_page(request, db, actor, errors={"invite": _sentence(exc)}, status_code=400)
    # The link is shown this once: only its hash is kept.
    link = f"{base}/invite/{quote(raw)}"
    return _team_page(request, db, actor, invite_link=link, status_code=201)


@router.post("/team/invites/{invite_id}/revoke")
def team_revoke_invite(invite_id: str, db: SessionDep, actor: SessionActor) -> Response:
    _require_admin(actor)
    try:
        service.revoke_invite(
            db,
            team_id=actor.team_id,
            invite_id=_uuid(invite_id, "That invite"),
            by=actor.user,
        )
    except NotInTeam as exc:
        raise NotFound("That invite") from exc
    return _redirect("/team", "revoked")


@router.post("/teams")
def create_team(
    request: Request, db: SessionDep, actor: SessionActor, name: FormStr = ""
) -> Response:
    _require_admin(actor)
    try:
        team = service.create_team_for(db, actor.user, name)
    except AccountError as exc:
        return _team_page(request, db, actor, errors={"team": _sentence(exc)}, status_code=400)
    if actor.session is not None:
        service.switch_team(db, actor.session, actor.user, team.id)
    return _redirect("/team", "team")


# --- Invitation links -------------------------------------------------------------------------


def _invite_page(
    request: Request,
    db: SessionDep,
    token: str,
    actor: Actor | None,
    *,
    error: str | None = None,
    name: str = "",
    email: str = "",
    status_code: int = 200,
) -> Response:
    try:
        invite, team = service.find_invite(db, token)
    except NotInTeam as exc:
        return templates.TemplateResponse(
            request,
            "partials/error.html",
            {"actor": actor, "status_code": 404, "message": str(exc)},
            status_code=404,
        )
    form = FormToken(request)
    response = templates.TemplateResponse(
        request,
        "auth/invite.html",
        {
            "actor": actor,
            "invite": invite,
            "team": team,
            "token": token,
            "csrf_token": actor.csrf_token if actor else form.value,
            "error": error,
            "name": name,
            "email": invite.email or email,
        },
        status_code=status_code,
    )
    if actor is None:
        form.attach(response)
    return response


@router.get("/invite/{token}", response_class=HTMLResponse)
def invite_page(request: Request, token: str, db: SessionDep, actor: OptionalActor) -> Response:
    return _invite_page(request, db, token, actor)


async def _invite_csrf(request: Request, actor: OptionalActor) -> Actor | None:
    """Signed in: the session's token; not yet: the pre-session form token."""
    if actor is not None and actor.session is None:
        # Joining a team changes the account: not something an API token may do.
        raise SessionRequired()
    if actor is not None and actor.session is not None:
        await check_session_csrf(request, actor.session)
    elif actor is None:
        form = await read_form(request)
        sent = form.get("csrf_token")
        if not FormToken.is_valid(request, sent if isinstance(sent, str) else None):
            raise CsrfFailed()
    return actor


@router.post("/invite/{token}")
def accept_invite(
    request: Request,
    token: str,
    db: SessionDep,
    actor: Annotated[Actor | None, Depends(_invite_csrf)],
    name: FormStr = "",
    email: FormStr = "",
    password: FormStr = "",
    password_again: FormStr = "",
    account: FormStr = "new",
) -> Response:
    if actor is None and account == "existing":
        return _join_with_account(request, db, token, email, password)
    if actor is not None:
        try:
            team = service.accept_invite(db, token, actor.user)
        except NotInTeam:
            return _invite_page(request, db, token, actor)
        except AccountError as exc:
            return _invite_page(request, db, token, actor, error=_sentence(exc), status_code=409)
        if actor.session is not None:
            service.switch_team(db, actor.session, actor.user, team.id)
        return _redirect("/")
    if password != password_again:
        return _invite_page(
            request,
            db,
            token,
            None,
            error="The two passwords differ; type the same one twice.",
            name=name,
            email=email,
            status_code=400,
        )
    try:
        user, team = service.accept_invite_new_user(
            db, token, name=name, email=email, password=password
        )
    except NotInTeam:
        return _invite_page(request, db, token, None)
    except AccountError as exc:
        if isinstance(exc, InviteRefused):
            service.record_invite_refusal(db, token)
        return _invite_page(
            request, db, token, None, error=_sentence(exc), name=name, email=email, status_code=400
        )
    raw, _ = service.start_session(
        db,
        user,
        team_id=team.id,
        user_agent=_user_agent(request),
        ip_address=client_address(request),
    )
    response = _redirect("/", "joined")
    set_session_cookie(response, raw)
    return response


def _join_with_account(
    request: Request, db: SessionDep, token: str, email: str, password: str
) -> Response:
    """The invite page's "I have an account" form: sign in with the password and join."""
    email = email.strip()[:320]
    address = client_address(request)
    throttle = LoginThrottle()
    wait = throttle.wait_seconds(email, address)
    if wait:
        return _invite_page(
            request,
            db,
            token,
            None,
            error=f"Too many sign-in attempts; try again in {wait} seconds.",
            email=email,
            status_code=429,
        )
    try:
        user, team = (
            service.accept_invite_existing_user(db, token, email=email, password=password)
            if email and password and len(password) <= 4096
            else (None, None)
        )
    except NotInTeam:
        return _invite_page(request, db, token, None)
    except AccountError as exc:
        return _invite_page(
            request, db, token, None, error=_sentence(exc), email=email, status_code=409
        )
    if user is None or team is None:
        throttle.record_failure(email, address)
        # Counted against the link too, so one link cannot test passwords without end.
        service.record_invite_refusal(db, token)
        return _invite_page(
            request, db, token, None, error=WRONG_CREDENTIALS, email=email, status_code=400
        )
    throttle.record_success(email, address)
    previous = request.cookies.get(session_cookie_name())
    if previous:
        service.end_session_by_token(db, previous)
    raw, _ = service.start_session(
        db,
        user,
        team_id=team.id,
        user_agent=_user_agent(request),
        ip_address=address,
    )
    response = _redirect("/", "joined")
    set_session_cookie(response, raw)
    return response
