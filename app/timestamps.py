"""Timestamps the studio emits (API, exports) are UTC, whatever the database's time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def as_utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


#: A datetime field of a response body: validated into UTC, so it renders with `Z`.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
