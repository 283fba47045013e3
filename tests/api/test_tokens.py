"""Personal API tokens: created from a session and shown once, stored hashed, used, revoked."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import ApiToken, Role
from app.security import token_hash
from tests.api.conftest import MakeCaller, assert_error, sign_in
from tests.factories import make_person


def test_token_lifecycle_shown_once_hashed_used_and_revoked(
    client: TestClient, committed_db: Session
) -> None:
    person = make_person(committed_db, role=Role.MEMBER)
    committed_db.commit()
    csrf = sign_in(committed_db, client, person)

    created = client.post("/api/v1/tokens", json={"name": "  build   server "}, headers=csrf)
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["secret"]
    assert re.fullmatch(r"fts_[A-Za-z0-9_-]{40,}", secret)
    assert body["token"]["name"] == "build server"
    assert secret.startswith(body["token"]["prefix"]) and len(body["token"]["prefix"]) < 16
    assert body["token"]["last_used_at"] is None

    # Stored as a hash only: the clear token is in no column of the row.
    row = committed_db.scalars(select(ApiToken).where(ApiToken.id == body["token"]["id"])).one()
    assert row.token_hash == token_hash(secret) and row.token_hash != secret
    assert all(secret not in str(getattr(row, c.key)) for c in ApiToken.__table__.columns)

    # Listed afterwards without the secret, ever.
    listed = client.get("/api/v1/tokens")
    assert listed.status_code == 200
    assert secret not in listed.text
    assert [t["id"] for t in listed.json()] == [body["token"]["id"]]

    # The token acts as its owner within its team and role.
    client.cookies.clear()
    bearer = {"Authorization": f"Bearer {secret}"}
    me = client.get("/api/v1/me", headers=bearer)
    assert me.status_code == 200, me.text
    assert me.json()["user"]["id"] == str(person.user.id)
    assert me.json()["team"]["id"] == str(person.team.id)
    assert me.json()["role"] == "member"
    assert me.json()["via"] == "token"
    committed_db.expire_all()
    assert committed_db.get(ApiToken, row.id).last_used_at is not None  # type: ignore[union-attr]

    # Revoked (with the token itself: no CSRF needed for tokens) → the next request is a 401.
    revoked = client.delete(f"/api/v1/tokens/{row.id}", headers=bearer)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    assert_error(client.get("/api/v1/me", headers=bearer), 401, "not_authenticated")


def test_unknown_token_is_401_in_the_shared_shape(client: TestClient) -> None:
    response = client.get("/api/v1/jobs", headers={"Authorization": "Bearer fts_nope"})
    assert_error(response, 401, "not_authenticated")
    assert_error(client.get("/api/v1/jobs"), 401, "not_authenticated")


def test_a_token_cannot_mint_tokens(client: TestClient, make_caller: MakeCaller) -> None:
    caller = make_caller()
    response = client.post("/api/v1/tokens", json={"name": "more"}, headers=caller.headers)
    assert_error(response, 403, "session_required")


def test_session_token_creation_needs_csrf_and_a_name(
    client: TestClient, committed_db: Session
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    csrf = sign_in(committed_db, client, person)
    assert_error(client.post("/api/v1/tokens", json={"name": "x"}), 403, "csrf_failed")
    error = assert_error(
        client.post("/api/v1/tokens", json={"name": ""}, headers=csrf), 422, "invalid_request"
    )
    assert error["fields"][0]["field"] == "name"  # type: ignore[index]


def test_revoking_someone_elses_token_is_404(client: TestClient, make_caller: MakeCaller) -> None:
    owner = make_caller()
    teammate = make_caller(team=owner.team)
    response = client.delete(f"/api/v1/tokens/{owner.token_id}", headers=teammate.headers)
    assert_error(response, 404, "not_found")
    assert client.get("/api/v1/me", headers=owner.headers).status_code == 200


def test_tokens_page_shows_the_secret_once_and_revokes(
    client: TestClient, committed_db: Session
) -> None:
    person = make_person(committed_db)
    committed_db.commit()
    sign_in(committed_db, client, person)
    page = client.get("/account/tokens")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    created = client.post("/account/tokens", data={"name": "laptop", "csrf_token": csrf.group(1)})
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    secret = re.search(r'value="(fts_[^"]+)"', created.text)
    assert secret
    again = client.get("/account/tokens")
    assert secret.group(1) not in again.text and "laptop" in again.text

    token = committed_db.scalars(select(ApiToken).where(ApiToken.user_id == person.user.id)).one()
    revoked = client.post(
        f"/account/tokens/{token.id}/revoke",
        data={"csrf_token": csrf.group(1)},
        follow_redirects=False,
    )
    assert revoked.status_code == 303
    client.cookies.clear()
    bearer = {"Authorization": f"Bearer {secret.group(1)}"}
    assert_error(client.get("/api/v1/me", headers=bearer), 401, "not_authenticated")
