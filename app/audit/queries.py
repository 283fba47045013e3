"""Reading the audit log: filters, keyset pages (newest first) and a full iteration for export."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry
from app.audit.schemas import AuditEntryOut, AuditPage
from app.auth.models import Membership
from app.errors import FieldError, NotFound, RequestInvalid

#: Entries on one page of /audit and GET /api/v1/audit.
PAGE_SIZE = 50
_CURSOR_RE = re.compile(r"(\d{1,20})\.([0-9a-f]{32})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ACTION_RE = re.compile(r"[a-z0-9_.]{1,80}")
_TARGET_RE = re.compile(r"[a-z0-9_]{1,40}")


@dataclass(frozen=True)
class AuditFilters:
    """What to show: one person's actions (`actor_id`), one action, a UTC day range (both
    included), a kind of target and/or one target id. None means "any"."""

    actor_id: uuid.UUID | None = None
    action: str | None = None
    start: date | None = None
    end: date | None = None
    target_type: str | None = None
    target_id: str | None = None


def check_filters(filters: AuditFilters) -> AuditFilters:
    """The filters, or RequestInvalid naming each field that cannot be used."""
    errors: list[FieldError] = []
    if filters.action is not None and not _ACTION_RE.fullmatch(filters.action):
        errors.append(FieldError("action", "use a dotted action name such as budget.set"))
    if filters.target_type is not None and not _TARGET_RE.fullmatch(filters.target_type):
        errors.append(FieldError("target_type", "use a target kind such as user or budget"))
    if filters.target_id is not None and len(filters.target_id) > 200:
        errors.append(FieldError("target_id", "at most 200 characters"))
    if filters.start and filters.end and filters.start > filters.end:
        errors.append(FieldError("end", "the last day must not be before the first day"))
    if errors:
        raise RequestInvalid(errors)
    return filters


def encode_cursor(entry: AuditEntry | AuditEntryOut) -> str:
    """The position after `entry`: whole microseconds since the epoch and its id."""
    delta = entry.at.astimezone(UTC) - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros}.{entry.id.hex}"


def decode_cursor(raw: str) -> tuple[datetime, uuid.UUID]:
    """(at, id) of a cursor from `encode_cursor`; RequestInvalid (field "after") otherwise."""
    match = _CURSOR_RE.fullmatch(raw.strip())
    try:
        if match is None:
            raise ValueError(raw)
        at = _EPOCH + timedelta(microseconds=int(match.group(1)))
    except (ValueError, OverflowError):
        raise RequestInvalid(
            [FieldError("after", "this page link is damaged; start again from the first page")]
        ) from None
    return at, uuid.UUID(hex=match.group(2))


def _query(team_id: uuid.UUID, filters: AuditFilters) -> Select[AuditEntry]:
    stmt = select(AuditEntry).where(AuditEntry.team_id == team_id)
    if filters.actor_id is not None:
        stmt = stmt.where(AuditEntry.actor_id == filters.actor_id)
    if filters.action is not None:
        stmt = stmt.where(AuditEntry.action == filters.action)
    if filters.target_type is not None:
        stmt = stmt.where(AuditEntry.target_type == filters.target_type)
    if filters.target_id is not None:
        stmt = stmt.where(AuditEntry.target_id == filters.target_id)
    if filters.start is not None:
        stmt = stmt.where(AuditEntry.at >= datetime.combine(filters.start, time(), tzinfo=UTC))
    if filters.end is not None and filters.end < date.max:
        # The last day is included: entries before the next day's start (none after date.max).
        last = datetime.combine(filters.end + timedelta(days=1), time(), tzinfo=UTC)
        stmt = stmt.where(AuditEntry.at < last)
    return stmt.order_by(AuditEntry.at.desc(), AuditEntry.id.desc())


def audit_page(
    db: Session,
    *,
    team_id: uuid.UUID,
    filters: AuditFilters,
    after: str | None = None,
    limit: int = PAGE_SIZE,
) -> AuditPage:
    """One page of the team's entries matching `filters`, newest first, after the cursor.

    Raises RequestInvalid for a bad filter or cursor.
    """
    stmt = _query(team_id, check_filters(filters))
    if filters.actor_id is not None:
        require_known_person(db, team_id=team_id, person=filters.actor_id)
    if after:
        at, entry_id = decode_cursor(after)
        # `at <= :at` bounds the index scan; the row comparison then breaks ties by id.
        stmt = stmt.where(
            AuditEntry.at <= at, tuple_(AuditEntry.at, AuditEntry.id) < tuple_(at, entry_id)
        )
    rows = list(db.scalars(stmt.limit(limit + 1)))
    items = [AuditEntryOut.model_validate(row) for row in rows[:limit]]
    more = len(rows) > limit
    return AuditPage(items=items, next_cursor=encode_cursor(items[-1]) if more else None)


def require_known_person(db: Session, *, team_id: uuid.UUID, person: uuid.UUID) -> None:
    """NotFound unless `person` is in the team or acted in its log (someone since removed)."""
    member = db.scalar(
        select(Membership.user_id).where(
            Membership.team_id == team_id, Membership.user_id == person
        )
    )
    if member is None and not db.scalar(
        select(AuditEntry.id)
        .where(AuditEntry.team_id == team_id, AuditEntry.actor_id == person)
        .limit(1)
    ):
        raise NotFound("That person")


def iter_entries(
    db: Session, *, team_id: uuid.UUID, filters: AuditFilters, batch: int = 500
) -> Iterator[AuditEntryOut]:
    """Every matching entry, newest first, read in keyset batches (memory stays flat)."""
    after: str | None = None
    while True:
        page = audit_page(db, team_id=team_id, filters=filters, after=after, limit=batch)
        yield from page.items
        if page.next_cursor is None:
            return
        after = page.next_cursor


def known_actions(db: Session, team_id: uuid.UUID) -> list[str]:
    """The actions the team's log holds, for the filter's list."""
    return list(
        db.scalars(
            select(AuditEntry.action)
            .where(AuditEntry.team_id == team_id)
            .distinct()
            .order_by(AuditEntry.action)
        )
    )


def known_targets(db: Session, team_id: uuid.UUID) -> list[str]:
    """The kinds of target the team's log holds, for the filter's list."""
    return list(
        db.scalars(
            select(AuditEntry.target_type)
            .where(AuditEntry.team_id == team_id)
            .distinct()
            .order_by(AuditEntry.target_type)
        )
    )
