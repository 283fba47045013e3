"""The audit log's query parameters, shared by the /audit page and GET /api/v1/audit."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import BeforeValidator, StringConstraints

from app.audit.queries import AuditFilters, check_filters


def _blank_is_none(value: Any) -> Any:
    # HTML forms send empty fields as "": treat them as not given.
    return None if value == "" else value


Blank = BeforeValidator(_blank_is_none)
_Text80 = Annotated[str, StringConstraints(max_length=80)]
_Text200 = Annotated[str, StringConstraints(max_length=200)]


def audit_filters(
    person: Annotated[
        uuid.UUID | None, Blank, Query(description="Only this person's actions (their user id).")
    ] = None,
    action: Annotated[
        _Text80 | None, Blank, Query(description="Only this action, e.g. budget.set.")
    ] = None,
    start: Annotated[
        date | None, Blank, Query(description="First UTC day, YYYY-MM-DD, included.")
    ] = None,
    end: Annotated[
        date | None, Blank, Query(description="Last UTC day, YYYY-MM-DD, included.")
    ] = None,
    target_type: Annotated[
        _Text80 | None, Blank, Query(description="Only this kind of target: user, budget, job...")
    ] = None,
    target_id: Annotated[
        _Text200 | None, Blank, Query(description="Only this target (its id, or 'team').")
    ] = None,
) -> AuditFilters:
    """The filters of a request; RequestInvalid (422) names a field that cannot be used."""
    return check_filters(
        AuditFilters(
            actor_id=person,
            action=action,
            start=start,
            end=end,
            target_type=target_type,
            target_id=target_id,
        )
    )


FiltersDep = Annotated[AuditFilters, Depends(audit_filters)]
AfterQuery = Annotated[
    Annotated[str, StringConstraints(max_length=60)] | None,
    Blank,
    Query(description="The `next_cursor` of the previous page."),
]


def filters_query(filters: AuditFilters) -> dict[str, str]:
    """The filters as query-string values, so links to the next page and exports keep them."""
    values = {
        "person": filters.actor_id,
        "action": filters.action,
        "start": filters.start,
        "end": filters.end,
        "target_type": filters.target_type,
        "target_id": filters.target_id,
    }
    return {key: str(value) for key, value in values.items() if value is not None}
