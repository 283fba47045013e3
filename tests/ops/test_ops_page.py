"""The /ops page: admins only, studio-wide account figures, other teams' jobs kept anonymous."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.costs.models import CreditBalance
from app.db import utcnow
from app.ops.heartbeat import Heartbeat
from tests.auth.support import login
from tests.factories import make_person, make_team
from tests.ops.conftest import ClientFactory, finished_fields, make_job


@pytest.mark.parametrize("role", [Role.MEMBER, Role.MANAGER])
def test_ops_is_refused_below_admin(
    committed_db: Session, client_factory: ClientFactory, role: Role
) -> None:
    person = make_person(committed_db, role=role)
    committed_db.commit()
    client = client_factory()
    login(client, person.user.email, person.password)
    for path in ("/ops", "/ops/live"):
        page = client.get(path)
        assert page.status_code == 403, path
        assert "ops-live" not in page.text
        as_json = client.get(path, headers={"accept": "application/json"})
        assert as_json.status_code == 403, path
        assert as_json.json()["error"]["code"] == "forbidden"


def test_ops_sends_signed_out_visitors_to_sign_in(client_factory: ClientFactory) -> None:
    response = client_factory().get("/ops", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")


def test_admin_sees_queue_cap_workers_failures_latency_and_balance(
    committed_db: Session, client_factory: ClientFactory, own_redis_keys: None
) -> None:
    team = make_team(committed_db, "Lighthouse keepers")
    admin = make_person(committed_db, team=team, role=Role.ADMIN)
    colleague = make_person(committed_db, team=team)
    outsider = make_person(committed_db)  # another team, same BFL account
    make_job(committed_db, colleague, prompt="our own waiting prompt", age=timedelta(minutes=7))
    make_job(committed_db, outsider, prompt="secret outsider prompt", age=timedelta(minutes=9))
    make_job(committed_db, outsider, "pending", model="flux-2-flex", submitted_at=utcnow())
    for bfl_s in (2.0, 4.0, 6.0, 8.0):
        make_job(committed_db, colleague, "ready", **finished_fields(600, bfl_s, 0.5))
    make_job(
        committed_db,
        outsider,
        "failed",
        error_code="bfl_server_error",
        finished_at=utcnow() - timedelta(minutes=5),
    )
    make_job(
        committed_db,
        colleague,
        "moderated",
        error_code="request_moderated",
        finished_at=utcnow() - timedelta(minutes=2),
    )
    make_job(  # outside the one-hour window
        committed_db,
        colleague,
        "failed",
        error_code="result_expired",
        finished_at=utcnow() - timedelta(hours=3),
    )
    committed_db.add(CreditBalance(credits=Decimal("4321.25"), checked_at=utcnow()))
    committed_db.commit()
    Heartbeat("worker", name="ops-page-worker", concurrency=4).beat()

    client = client_factory()
    login(client, admin.user.email, admin.password)
    page = client.get("/ops")

    assert page.status_code == 200
    html = page.text
    assert 'hx-get="/ops/live"' in html and 'hx-trigger="every' in html
    assert 'data-figure="queued">2<' in html
    assert 'data-figure="active">1 / ' in html
    assert 'data-figure="workers">1<' in html
    assert "ops-page-worker" in html
    assert 'data-figure="failures">2<' in html
    assert "bfl_server_error" in html and "request_moderated" in html
    assert "result_expired" not in html
    assert "4,321.25" in html
    # p50 of 2, 4, 6, 8 s is 5 s; p95 is 7.7 s.
    assert 'data-figure="bfl-latency">5.0 s / 7.7 s<' in html
    # Account-wide figures, but another team's job shows no prompt and no person.
    assert "our own waiting prompt" in html
    assert colleague.user.name in html
    assert "secret outsider prompt" not in html
    assert outsider.user.name not in html
    assert "another team" in html

    live = client.get("/ops/live")
    assert live.status_code == 200
    assert live.text.lstrip().startswith('<div id="ops-live"')
    assert "<html" not in live.text
    assert 'data-figure="queued">2<' in live.text


def test_ops_says_when_no_worker_is_alive(
    committed_db: Session, client_factory: ClientFactory, own_redis_keys: None
) -> None:
    admin = make_person(committed_db, role=Role.ADMIN)
    make_job(committed_db, admin)
    committed_db.commit()
    client = client_factory()
    login(client, admin.user.email, admin.password)

    html = client.get("/ops/live").text

    assert 'data-figure="workers">0<' in html
    assert "No worker is alive" in html
