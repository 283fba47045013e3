"""Every timestamp the API and the exports emit is UTC, whatever the database's time zone.

The database of these tests is one of their own, set to UTC+14 (`ALTER DATABASE ... SET
timezone = 'Pacific/Kiritimati'`), and the web process runs with TZ set to the same zone.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.auth.tokens import issue_token
from app.cli import migrate_database
from app.costs.export import ledger_csv
from app.costs.schemas import LedgerRow
from app.db import create_studio_engine
from app.embedded import free_port
from app.jobs.models import Job
from tests.costs.factories import make_charge
from tests.factories import make_person
from tests.pipeline_support import WebProcess, pipeline_env

ZONE = "Pacific/Kiritimati"  # UTC+14: any offset leak shows as a different calendar day
#: Late on a UTC day: already the next day in the database's zone.
CHARGED = datetime(2026, 11, 10, 23, 30, tzinfo=UTC)


@pytest.fixture
def far_east_database() -> Iterator[str]:
    """A migrated database of this test's own on the test server, its time zone UTC+14."""
    server = make_url(os.environ["DATABASE_URL"]).set(database="postgres")
    name = f"studio_tz_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        migrate_database(url)
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE \"{name}\" SET timezone = '{ZONE}'"))
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_studio_talks_utc_to_a_database_in_another_zone(far_east_database: str) -> None:
    plain = create_engine(far_east_database)
    studio = create_studio_engine(far_east_database)
    try:
        with plain.connect() as conn:
            assert conn.scalar(text("SHOW timezone")) == ZONE  # the setting is in force
        with studio.connect() as conn:
            assert conn.scalar(text("SHOW timezone")) == "UTC"
            conn.rollback()  # a rolled-back transaction does not undo it
            assert conn.scalar(text("SHOW timezone")) == "UTC"
            read = conn.scalar(text("SELECT CAST(:at AS timestamptz)"), {"at": CHARGED})
            assert read.utcoffset() == timedelta(0)
    finally:
        plain.dispose()
        studio.dispose()


def test_job_times_and_the_ledger_are_utc_over_http(far_east_database: str) -> None:
    seed = create_engine(far_east_database)  # a plain engine: the zone is UTC+14 here
    with Session(seed, expire_on_commit=False) as db:
        person = make_person(db)
        job = make_charge(db, person, "4.5", at=CHARGED)
        db.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(
                submitted_at=CHARGED + timedelta(seconds=2),
                finished_at=CHARGED + timedelta(seconds=9),
            )
        )
        token = issue_token(db, user_id=person.user.id, team_id=person.team.id, name="tz").secret
        db.commit()
    seed.dispose()

    port = free_port()
    env = pipeline_env(DATABASE_URL=far_east_database, TZ=ZONE)
    with (
        WebProcess(env, port),
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {token}"}
        ) as http,
    ):
        one = http.get(f"/api/v1/jobs/{job.id}")
        assert one.status_code == 200, one.text
        body = one.json()
        assert body["created_at"] == "2026-11-10T23:30:00Z"
        assert body["submitted_at"] == "2026-11-10T23:30:02Z"
        assert body["finished_at"] == "2026-11-10T23:30:09Z"
        listed = http.get("/api/v1/jobs").json()
        assert [j["created_at"] for j in listed["items"]] == ["2026-11-10T23:30:00Z"]

        # The UTC day of the charge holds it, in the ledger and in the dashboard's days.
        day = {"start": "2026-11-10", "end": "2026-11-10"}
        ledger = http.get("/api/v1/costs/ledger", params=day)
        assert ledger.status_code == 200, ledger.text
        assert [r["charged_at"] for r in ledger.json()["rows"]] == ["2026-11-10T23:30:00Z"]
        exported = http.get("/api/v1/costs/ledger", params={**day, "format": "csv"})
        assert exported.status_code == 200
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [r["charged_at"] for r in rows] == ["2026-11-10T23:30:00+00:00"]
        summary = http.get("/api/v1/costs/summary", params=day).json()
        assert [(d["day"], d["charges"]) for d in summary["by_day"] if d["charges"]] == [
            ("2026-11-10", 1)
        ]


def test_serialization_converts_any_offset_to_utc() -> None:
    """Even a value that arrives with an offset (another driver, a pool without the session
    setting) leaves as UTC: the response models and the CSV writer convert it."""
    far_east = CHARGED.astimezone(timezone(timedelta(hours=14)))
    row = LedgerRow(
        id=uuid.uuid4(),
        charged_at=far_east,
        job_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        person="Ana",
        model="flux-2-pro",
        credits=Decimal("1"),
        usd=Decimal("0.01"),
        job_status="ready",
        prompt="a lighthouse",
    )
    assert row.model_dump(mode="json")["charged_at"] == "2026-11-10T23:30:00Z"
    csv_text = "".join(ledger_csv([row]))
    assert "2026-11-10T23:30:00+00:00" in csv_text and "+14:00" not in csv_text
