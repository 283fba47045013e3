"""A real `studio web` whose PostgreSQL stops: 503 with Retry-After and X-Request-ID, logged once.

The database here is a private server of this test's own; the shared one is never stopped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

import app.celery_app as celery_module
from app.auth.models import Role
from app.auth.service import add_member, create_team, create_user
from app.auth.tokens import issue_token
from app.bfl.webhooks import sign_webhook_token
from app.cli import migrate_database
from app.embedded import free_port
from app.settings import get_settings
from tests.pipeline_support import WebProcess, pipeline_env, wait_until
from tests.private_postgres import PrivatePostgres


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as server:
        yield server


def _log_lines(web: WebProcess) -> list[dict[str, Any]]:
    lines = []
    for raw in web.log().splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = {"event": raw, "level": "unparsed"}
        if isinstance(entry, dict):
            lines.append(entry)
    return lines


def test_requests_answer_503_with_their_id_and_are_logged_once_while_postgres_is_down(
    private_postgres: PrivatePostgres,
) -> None:
    url = private_postgres.url()
    migrate_database(url)
    engine = create_engine(url)
    with Session(engine) as db:
        team = create_team(db, "Night shift")
        user = create_user(db, email="dba@example.test", name="Dee", password="pw-7f3a9c2e51")
        add_member(db, user, team, Role.MEMBER)
        token = issue_token(db, user_id=user.id, team_id=team.id, name="probe").secret
        db.commit()
    engine.dispose()

    port = free_port()
    env = pipeline_env(DATABASE_URL=url, LOG_FORMAT="json", LOG_LEVEL="INFO")
    with WebProcess(env, port) as web, httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        bearer = {"authorization": f"Bearer {token}"}
        assert http.get("/api/v1/me", headers=bearer).status_code == 200

        private_postgres.stop()

        api_id = f"db-down-api-{uuid.uuid4().hex[:8]}"
        api = http.get("/api/v1/me", headers={**bearer, "x-request-id": api_id})
        assert api.status_code == 503
        assert api.headers["x-request-id"] == api_id
        assert int(api.headers["retry-after"]) > 0
        error = api.json()["error"]
        assert error["code"] == "database_unavailable"
        assert "database" in error["message"] and "try again" in error["message"]

        page_id = f"db-down-page-{uuid.uuid4().hex[:8]}"
        page = http.get(
            "/gallery",
            headers={
                "x-request-id": page_id,
                "accept": "text/html",
                "cookie": "__Host-studio_session=some-session-token",
            },
        )
        assert page.status_code == 503
        assert page.headers["x-request-id"] == page_id
        assert int(page.headers["retry-after"]) > 0
        assert page.headers["content-type"].startswith("text/html")
        assert "cannot reach its database" in page.text

        # The readiness probe says so too (it answers without the request's session).
        assert http.get("/readyz").status_code == 503
        # Each request's own access line comes last: once both are there, so is everything.
        wait_until(
            lambda: all(
                any(
                    line.get("request_id") == i and line.get("event") == "request"
                    for line in _log_lines(web)
                )
                for i in (api_id, page_id)
            ),
            timeout=10,
            message="the requests' log lines",
        )
        lines = _log_lines(web)

    for request_id in (api_id, page_id):
        errors = [
            line
            for line in lines
            if line.get("level") in ("error", "critical", "unparsed")
            and request_id in json.dumps(line)
        ]
        assert len(errors) == 1, errors
        assert errors[0]["request_id"] == request_id
        assert "database unavailable" in errors[0]["event"]
    # No second report of the same failure by the server, with or without an id.
    assert not [line for line in lines if "Exception in ASGI application" in json.dumps(line)]
    assert not [line for line in lines if line.get("level") == "error" and "request_id" not in line]


def test_bfl_webhook_calls_are_taken_and_their_polls_sent_while_postgres_is_down(
    private_postgres: PrivatePostgres,
) -> None:
    # The receiver reads PostgreSQL to skip a poll another one already holds; without the
    # database it must still take BFL's call (202) and send the poll, as BFL does not call
    # again for an outage of ours.
    url = private_postgres.url()
    migrate_database(url)
    job_id = str(uuid.uuid4())
    token = sign_webhook_token(get_settings().SECRET_KEY.get_secret_value(), job_id)
    celery_module.app.control.purge()  # this run's queues: only the poll sent here counts
    port = free_port()
    env = pipeline_env(DATABASE_URL=url, LOG_FORMAT="json", LOG_LEVEL="INFO")
    with WebProcess(env, port) as web, httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        private_postgres.stop()
        answer = http.post(f"/bfl/webhook/{job_id}/{token}", json={"status": "Ready"})
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"accepted": True}
        # A wrong token is still refused without the database.
        assert http.post(f"/bfl/webhook/{job_id}/{'0' * 64}", json={}).status_code == 404
        lines = _log_lines(web)
    assert celery_module.app.control.purge() == 1  # the poll of that job, and nothing else
    assert not [line for line in lines if line.get("level") in ("error", "critical")]
    assert any(job_id in json.dumps(line) and line.get("level") == "warning" for line in lines), (
        "the receiver says it sent the poll without the database"
    )
