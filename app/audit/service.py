"""Recording audit entries. Call `record` inside the transaction that makes the change, so the
entry and the change commit (or roll back) together."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from app.audit.models import AuditEntry


def _plain(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """JSON-safe copy of `values` (UUIDs, decimals, dates and enums become strings)."""
    if values is None:
        return None
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or isinstance(value, bool | int | float | str):
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = [v if isinstance(v, bool | int | float | str) else str(v) for v in value]
        elif isinstance(value, Mapping):
            out[key] = _plain(value)
        else:
            out[key] = str(getattr(value, "value", value))
    return out


def record(
    db: Session,
    *,
    team_id: uuid.UUID,
    actor_id: uuid.UUID | None,
    actor_email: str,
    action: str,
    target_type: str,
    target_id: str | uuid.UUID | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Add one audit entry to `db`'s transaction (flushed, not committed) and return it.

    `action` is a dotted verb ("budget.set"); `before`/`after` are the changed fields' values
    (None when the thing did not exist before / no longer exists after).
    """
    entry = AuditEntry(
        team_id=team_id,
        actor_id=actor_id,
        actor_email=actor_email,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        before=_plain(before),
        after=_plain(after),
    )
    db.add(entry)
    db.flush()
    return entry
