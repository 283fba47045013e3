"""The ledger as CSV: the columns, spreadsheet-safe cells and a streaming writer."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from fastapi.responses import StreamingResponse

from app.costs import service
from app.costs.schemas import LedgerRow
from app.db import session_scope
from app.timestamps import as_utc

COLUMNS = (
    "charged_at",
    "charge_id",
    "job_id",
    "user_id",
    "person",
    "project_id",
    "project",
    "model",
    "credits",
    "usd",
    "job_status",
    "prompt",
)
#: Spreadsheets run a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _safe_text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _cells(row: LedgerRow) -> list[str]:
    return [
        as_utc(row.charged_at).isoformat(),
        str(row.id),
        str(row.job_id),
        str(row.user_id),
        _safe_text(row.person),
        "" if row.project_id is None else str(row.project_id),
        _safe_text(row.project),
        _safe_text(row.model),
        f"{row.credits:f}",
        f"{row.usd:f}",
        row.job_status,
        _safe_text(row.prompt),
    ]


def ledger_csv(rows: Iterable[LedgerRow]) -> Iterator[str]:
    """The header line, then one line per ledger row, as CSV text chunks to stream."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for count, row in enumerate(rows, start=1):
        writer.writerow(_cells(row))
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


PROJECT_COLUMNS = ("project_id", "project", "archived", "charges", "credits", "usd")


def projects_csv_response(
    scope: service.Scope, period: service.Period, model: str | None
) -> StreamingResponse:
    """Per-project totals of the filtered ledger as a CSV download (one line per project)."""

    def chunks() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(PROJECT_COLUMNS)
        with session_scope() as db:
            for line in service.spend_by_project(db, scope, period, model):
                writer.writerow(
                    [
                        str(line.project_id),
                        _safe_text(line.name),
                        "true" if line.archived else "false",
                        line.charges,
                        f"{line.credits:f}",
                        f"{line.usd:f}",
                    ]
                )
        yield buffer.getvalue()

    name = f"projects-{period.first_day.isoformat()}-{period.last_day.isoformat()}.csv"
    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


def csv_response(
    scope: service.Scope, period: service.Period, model: str | None
) -> StreamingResponse:
    """The filtered ledger as a CSV download, streamed from its own read-only session."""

    def chunks() -> Iterator[str]:
        # The request's session may be closed before the body is sent; use a session of our own.
        with session_scope() as db:
            yield from ledger_csv(service.iter_ledger(db, scope, period, model))

    name = f"ledger-{period.first_day.isoformat()}-{period.last_day.isoformat()}.csv"
    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )
