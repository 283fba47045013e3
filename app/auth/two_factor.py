"""The second factor: TOTP authenticators (RFC 6238), single-use recovery codes, team policy."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyotp
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.audit.service import record
from app.auth.models import Membership, RecoveryCode, Role, Team, User
from app.auth.service import AccountError, NotInTeam
from app.db import utcnow
from app.security import signature, verify_password

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

# cryptography (OpenSSL, ~8 MB) and segno are imported where a second factor is used, so a web
# process holds them only once someone signs in with one or sets one up.

ISSUER = "FLUX Team Studio"
#: RFC 6238's defaults, which every authenticator app understands: 30-second steps, 6 digits.
STEP_SECONDS = 30
DIGITS = 6
#: Codes of the step before and after the current one count too, for clocks a little off.
DRIFT_STEPS = 1
RECOVERY_CODE_COUNT = 10
#: 24 base32 characters hold 120 bits: above ASVS's 112 bits, so a plain SHA-256 may store them.
_RECOVERY_CHARS = 24
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_TOTP_CODE = re.compile(r"\d{6}")


# --- The secret at rest -----------------------------------------------------------------------


def _fernet() -> Fernet:
    from cryptography.fernet import Fernet

    # A key of its own, derived from SECRET_KEY for this one purpose: a database dump alone
    # does not reveal anyone's authenticator secret.
    key = bytes.fromhex(signature("totp-secret-encryption", "v1"))
    return Fernet(base64.urlsafe_b64encode(key))


def _seal(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def _open(sealed: str) -> str | None:
    from cryptography.fernet import InvalidToken

    try:
        return _fernet().decrypt(sealed.encode()).decode()
    except InvalidToken:
        # SECRET_KEY changed since the secret was stored: the authenticator can no longer be
        # checked; recovery codes (stored as hashes) still work, and an admin can reset it.
        return None


# --- Setting up -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrolment:
    """What the setup page shows once: the secret as text and the otpauth:// URI as a QR code."""

    secret: str
    uri: str

    @property
    def grouped_secret(self) -> str:
        """The secret in groups of four, easier to type into an app by hand."""
        return " ".join(self.secret[i : i + 4] for i in range(0, len(self.secret), 4))

    def qr_svg(self) -> str:
        """The URI as an inline SVG QR code (no script, no external image)."""
        import segno

        qr = segno.make(self.uri, error="m")
        svg: str = qr.svg_inline(scale=5, border=2, dark="#111", light="#fff", omitsize=False)
        return svg


def begin_setup(db: Session, user: User) -> Enrolment:
    """A new pending secret for the person (replacing an unconfirmed one).

    Raises AccountError when the person already has a confirmed second factor.
    """
    if user.has_two_factor:
        raise AccountError("two-factor sign-in is on already; turn it off first to change apps")
    secret = pyotp.random_base32(length=32)
    user.totp_secret_encrypted = _seal(secret)
    user.totp_enabled_at = None
    user.totp_last_step = None
    db.flush()
    return _enrolment(user, secret)


def pending_enrolment(user: User) -> Enrolment | None:
    """The unconfirmed setup still open for the person, to show again after a wrong code."""
    if user.has_two_factor or user.totp_secret_encrypted is None:
        return None
    secret = _open(user.totp_secret_encrypted)
    return _enrolment(user, secret) if secret else None


def _enrolment(user: User, secret: str) -> Enrolment:
    uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=user.email, issuer_name=ISSUER
    )
    return Enrolment(secret=secret, uri=uri)


def confirm_setup(db: Session, user: User, code: str) -> list[str]:
    """Turn the second factor on with a current code from the app; returns fresh recovery
    codes (raw, to show once).

    Raises AccountError (field "code") when there is no setup to confirm or the code is wrong.
    """
    if user.has_two_factor:
        raise AccountError("two-factor sign-in is on already", field="code")
    if user.totp_secret_encrypted is None:
        raise AccountError("start the setup first: the page shows a new QR code", field="code")
    if not _accept_totp(db, user, code):
        raise AccountError(
            "that code is not the current one; check the app's clock and type the newest code",
            field="code",
        )
    user.totp_enabled_at = utcnow()
    db.flush()
    return new_recovery_codes(db, user)


# --- Checking codes ---------------------------------------------------------------------------


def _normalise(code: str) -> str:
    return re.sub(r"[\s-]", "", code).lower()


def _accept_totp(db: Session, user: User, code: str) -> bool:
    """True when `code` is the authenticator's code of a step not used before.

    The step is claimed with one guarded UPDATE, so a code seen once (even by two requests at
    the same moment) is refused the second time: no replay within its window.
    """
    code = _normalise(code)
    if not _TOTP_CODE.fullmatch(code) or user.totp_secret_encrypted is None:
        return False
    secret = _open(user.totp_secret_encrypted)
    if secret is None:
        return False
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    now_step = int(time.time()) // STEP_SECONDS
    for step in range(now_step - DRIFT_STEPS, now_step + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            claimed = db.scalar(
                update(User)
                .where(
                    User.id == user.id,
                    (User.totp_last_step.is_(None)) | (User.totp_last_step < step),
                )
                .values(totp_last_step=step)
                .returning(User.id)
            )
            if claimed is None:
                return False
            user.totp_last_step = step
            return True
    return False


def _recovery_hash(code: str) -> str:
    return hashlib.sha256(_normalise(code).encode()).hexdigest()


def _use_recovery_code(db: Session, user: User, code: str) -> bool:
    normalised = _normalise(code)
    if len(normalised) != _RECOVERY_CHARS:
        return False
    used = db.scalar(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash == _recovery_hash(normalised),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .returning(RecoveryCode.id)
    )
    return used is not None


def check_second_factor(db: Session, user: User, code: str) -> bool:
    """True when `code` is a fresh authenticator code or an unused recovery code of the
    person's (a recovery code is used up by this). The caller counts failures."""
    if not user.has_two_factor or len(code) > 64:
        return False
    return _accept_totp(db, user, code) or _use_recovery_code(db, user, code)


# --- Recovery codes ---------------------------------------------------------------------------


def _recovery_code() -> str:
    raw = "".join(secrets.choice(_BASE32) for _ in range(_RECOVERY_CHARS))
    return "-".join(raw[i : i + 4] for i in range(0, _RECOVERY_CHARS, 4))


def new_recovery_codes(db: Session, user: User) -> list[str]:
    """Replace the person's recovery codes with 10 new ones; returns them raw (shown once,
    stored only as SHA-256)."""
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    db.add_all(RecoveryCode(user_id=user.id, code_hash=_recovery_hash(c)) for c in codes)
    db.flush()
    return codes


def regenerate_recovery_codes(db: Session, user: User, code: str) -> list[str]:
    """New recovery codes after proving the second factor with `code` (the old ones end).

    Raises AccountError (field "code") when the code is wrong or the second factor is off.
    """
    if not user.has_two_factor:
        raise AccountError("turn two-factor sign-in on first", field="code")
    if not check_second_factor(db, user, code):
        raise AccountError("that code is not right; type the newest code", field="code")
    return new_recovery_codes(db, user)


def recovery_codes_left(db: Session, user_id: uuid.UUID) -> int:
    return (
        db.scalar(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        )
        or 0
    )


# --- Turning it off ---------------------------------------------------------------------------


def _clear(db: Session, user: User) -> None:
    user.totp_secret_encrypted = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    db.flush()


def disable(db: Session, user: User, *, current_password: str, code: str) -> None:
    """Turn the second factor off after proving both the password and a code.

    Raises AccountError with field "current_password" or "code" naming what was wrong.
    """
    if not user.has_two_factor:
        raise AccountError("two-factor sign-in is off already", field="code")
    if not verify_password(user.password_hash, current_password):
        raise AccountError("your current password is not correct", field="current_password")
    if not check_second_factor(db, user, code):
        raise AccountError("that code is not right; type the newest code", field="code")
    _clear(db, user)


def reset_for_member(db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID, by: User) -> User:
    """A team admin (`by`) removes a member's second factor (a lost phone), audited as
    "two_factor.reset". NotInTeam when the person is not in the team; the person sets it up
    again if the team's policy asks."""
    user = db.scalar(
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.team_id == team_id, User.id == user_id)
    )
    if user is None:
        raise NotInTeam("That person was not found in this team.")
    was_on = user.has_two_factor
    _clear(db, user)
    record(
        db,
        team_id=team_id,
        actor_id=by.id,
        actor_email=by.email,
        action="two_factor.reset",
        target_type="user",
        target_id=user_id,
        before={"two_factor": was_on},
        after={"two_factor": False},
    )
    return user


# --- Team policy ------------------------------------------------------------------------------


def set_team_policy(db: Session, team: Team, *, required: bool, by: User) -> None:
    """Whether the team's managers and admins must use a second factor in the browser;
    a change is audited as `by`'s "team.two_factor_policy"."""
    before = team.require_two_factor
    team.require_two_factor = required
    db.flush()
    if before != required:
        record(
            db,
            team_id=team.id,
            actor_id=by.id,
            actor_email=by.email,
            action="team.two_factor_policy",
            target_type="team",
            target_id=team.id,
            before={"require_two_factor": before},
            after={"require_two_factor": required},
        )


def setup_required(team: Team, user: User, role: Role) -> bool:
    """True when this team's policy asks this person for a second factor they do not have."""
    return team.require_two_factor and role.at_least(Role.MANAGER) and not user.has_two_factor
