"""The audit log's shapes as the pages and the JSON API show them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditEntryOut(BaseModel):
    """One audit entry: who (`actor_id`, `actor_email` at the time), when (`at`, UTC), what
    (`action`, a dotted verb), to what (`target_type`, `target_id`) and the changed values."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    at: datetime
    actor_id: uuid.UUID | None
    actor_email: str
    action: str
    target_type: str
    target_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(BaseModel):
    """Newest first; pass `next_cursor` as `after` for the next page (null: no more)."""

    items: list[AuditEntryOut]
    next_cursor: str | None
