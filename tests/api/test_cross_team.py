"""Teams are walled off through the API too: team A's ids replayed with team B's token are 404."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.costs.service import record_charge
from app.jobs.models import Job, JobStatus
from tests.api.conftest import Caller, MakeCaller, assert_error, make_job, make_ready_job


@pytest.fixture
def team_a_objects(make_caller: MakeCaller, committed_db: Session) -> dict[str, object]:
    a = make_caller(role=Role.MANAGER)
    ready, _ = make_ready_job(committed_db, a, prompt="team a secret prompt")
    queued = make_job(committed_db, a, prompt="team a queued prompt")
    failed = make_job(committed_db, a, status=JobStatus.FAILED, prompt="team a failed prompt")
    ready.cost_credits = Decimal("4")
    committed_db.add(ready)
    record_charge(committed_db, committed_db.get(Job, ready.id))  # type: ignore[arg-type]
    committed_db.commit()
    return {"caller": a, "ready": ready, "queued": queued, "failed": failed}


@pytest.mark.parametrize("role", [Role.MEMBER, Role.ADMIN])
def test_every_resource_of_team_a_is_404_for_team_b(
    client: TestClient,
    make_caller: MakeCaller,
    team_a_objects: dict[str, object],
    role: Role,
) -> None:
    a = team_a_objects["caller"]
    assert isinstance(a, Caller)
    ready, queued, failed = (team_a_objects[k] for k in ("ready", "queued", "failed"))
    b = make_caller(role=role)
    attempts = [
        ("GET", f"/api/v1/jobs/{ready.id}"),  # type: ignore[attr-defined]
        ("POST", f"/api/v1/jobs/{queued.id}/cancel"),  # type: ignore[attr-defined]
        ("POST", f"/api/v1/jobs/{failed.id}/retry"),  # type: ignore[attr-defined]
        ("GET", f"/api/v1/images/{ready.id}"),  # type: ignore[attr-defined]
        ("GET", f"/api/v1/images/{ready.id}/original"),  # type: ignore[attr-defined]
        ("GET", f"/api/v1/images/{ready.id}/thumbnail"),  # type: ignore[attr-defined]
        ("GET", f"/api/v1/prompts/{ready.id}"),  # type: ignore[attr-defined]
        ("DELETE", f"/api/v1/tokens/{a.token_id}"),
    ]
    for method, path in attempts:
        response = client.request(method, path, headers=b.headers)
        assert_error(response, 404, "not_found")
        assert "team a" not in response.text

    # Lists never show team A's work either.
    for path in ("/api/v1/jobs", "/api/v1/prompts", "/api/v1/tokens"):
        response = client.get(path, headers=b.headers)
        assert response.status_code == 200, response.text
        assert "team a" not in response.text and str(ready.id) not in response.text  # type: ignore[attr-defined]

    # And nothing changed in team A: the queued job is still queued, the token still works.
    assert client.get(f"/api/v1/jobs/{queued.id}", headers=a.headers).json()["status"] == "queued"  # type: ignore[attr-defined]
    assert client.get("/api/v1/me", headers=a.headers).status_code == 200


def test_cost_endpoints_stay_within_the_team(
    client: TestClient, make_caller: MakeCaller, team_a_objects: dict[str, object]
) -> None:
    a = team_a_objects["caller"]
    assert isinstance(a, Caller)
    ready = team_a_objects["ready"]
    b_manager = make_caller(role=Role.MANAGER)
    a_user = str(a.person.user.id)

    # Team A sees its own charge, so the checks below are not vacuous.
    own = client.get("/api/v1/costs/ledger", headers=a.headers)
    assert own.status_code == 200 and str(ready.id) in own.text  # type: ignore[attr-defined]

    ledger = client.get("/api/v1/costs/ledger", headers=b_manager.headers)
    assert ledger.status_code == 200 and ledger.json()["rows"] == []
    summary = client.get("/api/v1/costs/summary", headers=b_manager.headers)
    assert summary.status_code == 200
    assert "team a" not in summary.text and a_user not in summary.text
    spend = client.get("/api/v1/me/spend", headers=b_manager.headers)
    assert spend.status_code == 200 and a_user not in spend.text

    for path in ("/api/v1/costs/ledger", "/api/v1/costs/summary"):
        response = client.get(path, params={"user_id": a_user}, headers=b_manager.headers)
        assert_error(response, 404, "not_found")
