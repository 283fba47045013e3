"""Property-based contract test: every /api/v1 operation, fuzzed from /openapi.json.

Fails on any 5xx, any response whose body does not match its documented schema, and any status
code or content type the document does not list. Runs authenticated as a seeded manager with
an API token, against the real database, with the per-token rate limit turned off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.auth.tokens import issue_token
from app.jobs.models import JobStatus
from app.main import create_app
from app.settings import get_settings
from tests.api.conftest import Caller, make_job, make_ready_job
from tests.factories import make_person

#: Examples per operation and generation mode; with ~20 operations the file runs in 1-3 minutes.
MAX_EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "40"))

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())
schema.config.generation.update(max_examples=MAX_EXAMPLES)


@dataclass
class Seeded:
    headers: dict[str, str]


@pytest.fixture(scope="module")
def seeded(engine: Engine) -> Iterator[Seeded]:
    """A manager with a token, a few jobs and a stored image, committed for the whole module."""
    previous = os.environ.get("API_RATE_LIMIT_PER_MINUTE")
    os.environ["API_RATE_LIMIT_PER_MINUTE"] = "0"
    get_settings.cache_clear()
    db = Session(bind=engine, expire_on_commit=False)
    try:
        person = make_person(db, role=Role.MANAGER)
        issued = issue_token(db, user_id=person.user.id, team_id=person.team.id, name="fuzz")
        db.commit()
        caller = Caller(person=person, token_id=issued.token.id, secret=issued.secret)
        make_ready_job(db, caller, prompt="a fuzzed lighthouse")
        make_job(db, caller, status=JobStatus.FAILED, prompt="a failed kite")
        make_job(db, caller, prompt="a queued comet")
        yield Seeded(headers=caller.headers)
    finally:
        db.close()
        from app.db import Base

        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        if previous is None:
            os.environ.pop("API_RATE_LIMIT_PER_MINUTE", None)
        else:
            os.environ["API_RATE_LIMIT_PER_MINUTE"] = previous
        get_settings.cache_clear()


@pytest.mark.slow
@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    max_examples=MAX_EXAMPLES,
    derandomize=True,
)
def test_api_contract(case: schemathesis.Case, seeded: Seeded) -> None:
    case.call_and_validate(
        headers=seeded.headers,
        checks=[
            not_a_server_error,
            response_schema_conformance,
            status_code_conformance,
            content_type_conformance,
        ],
    )
