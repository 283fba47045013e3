"""The audit log as downloads: CSV and JSON, streamed from the database in keyset batches."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import date

from fastapi.responses import StreamingResponse

from app.audit.queries import AuditFilters, iter_entries, require_known_person
from app.audit.schemas import AuditEntryOut
from app.db import session_scope
from app.timestamps import as_utc

COLUMNS = (
    "at",
    "id",
    "actor_id",
    "actor_email",
    "action",
    "target_type",
    "target_id",
    "before",
    "after",
)
#: Spreadsheets run a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FLUSH_EVERY = 500


def _safe_text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _cells(entry: AuditEntryOut) -> list[str]:
    return [
        as_utc(entry.at).isoformat(),
        str(entry.id),
        "" if entry.actor_id is None else str(entry.actor_id),
        _safe_text(entry.actor_email),
        entry.action,
        entry.target_type,
        _safe_text(entry.target_id or ""),
        "" if entry.before is None else _safe_text(json.dumps(entry.before, sort_keys=True)),
        "" if entry.after is None else _safe_text(json.dumps(entry.after, sort_keys=True)),
    ]


def audit_csv(entries: Iterable[AuditEntryOut]) -> Iterator[str]:
    """The header line, then one line per entry, as CSV text chunks to stream."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for count, entry in enumerate(entries, start=1):
        writer.writerow(_cells(entry))
        if count % _FLUSH_EVERY == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def audit_json(entries: Iterable[AuditEntryOut]) -> Iterator[str]:
    """A JSON array of entries (the API's `AuditEntryOut` shape), as text chunks to stream."""
    yield "["
    for count, entry in enumerate(entries):
        yield ("," if count else "") + entry.model_dump_json()
    yield "]"


def audit_download(
    team_id: uuid.UUID, filters: AuditFilters, kind: str, today: date
) -> StreamingResponse:
    """The team's filtered log as a CSV (`kind` "csv") or JSON download, streamed from a
    read-only session of its own (the request's may close before the body is sent).

    Raises NotFound for a person neither in the team nor in its log (before streaming).
    """
    if filters.actor_id is not None:
        with session_scope() as db:
            require_known_person(db, team_id=team_id, person=filters.actor_id)

    def chunks() -> Iterator[str]:
        with session_scope() as db:
            entries = iter_entries(db, team_id=team_id, filters=filters)
            yield from audit_csv(entries) if kind == "csv" else audit_json(entries)

    media = "text/csv; charset=utf-8" if kind == "csv" else "application/json"
    name = f"audit-{today.isoformat()}.{kind}"
    return StreamingResponse(
        chunks(),
        media_type=media,
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )
