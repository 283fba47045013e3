"""One error shape everywhere, a last-resort 500 handler, role checks, and an honest OpenAPI."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.auth.service import add_member
from app.main import create_app
from tests.api.conftest import MakeCaller, assert_error


def test_unknown_routes_and_methods_answer_the_shared_shape(
    client: TestClient, make_caller: MakeCaller
) -> None:
    caller = make_caller()
    assert_error(client.get("/api/v1/nothing-here", headers=caller.headers), 404, "not_found")
    assert_error(client.put("/api/v1/models", headers=caller.headers), 405, "method_not_allowed")
    error = assert_error(
        client.get("/api/v1/jobs/not-a-uuid", headers=caller.headers), 422, "invalid_request"
    )
    assert error["fields"][0]["field"] == "job_id"  # type: ignore[index]
    error = assert_error(
        client.get("/api/v1/jobs", params={"limit": 0}, headers=caller.headers),
        422,
        "invalid_request",
    )
    assert error["fields"][0]["field"] == "limit"  # type: ignore[index]


def test_an_unexpected_error_is_a_logged_internal_error_in_the_shared_shape() -> None:
    app = create_app()

    @app.get("/api/v1/_explode")
    def explode() -> None:
        raise RuntimeError("boom")

    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as client:
        response = client.get("/api/v1/_explode")
    error = assert_error(response, 500, "internal_error")
    assert "boom" not in response.text and "Traceback" not in response.text
    assert error["fields"] == []


def test_a_token_carries_its_owners_current_role(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller(role=Role.MEMBER)
    assert_error(client.get("/api/v1/costs/budgets", headers=caller.headers), 403, "forbidden")
    add_member(committed_db, caller.person.user, caller.team, Role.MANAGER)
    committed_db.commit()
    assert client.get("/api/v1/costs/budgets", headers=caller.headers).status_code == 200


def test_openapi_describes_only_the_api_with_errors_and_models(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    assert paths and all(p.startswith("/api/v1/") for p in paths)
    assert document["components"]["securitySchemes"]["apiToken"]["scheme"] == "bearer"
    assert "HTTPValidationError" not in document["components"]["schemas"]
    error_ref = "#/components/schemas/ErrorResponse"
    for path, operations in paths.items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            for status in ("401", "429", "500"):
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": error_ref}, where
            assert "Retry-After" in responses["429"]["headers"], where
            if "422" in responses:
                schema = responses["422"]["content"]["application/json"]["schema"]
                assert schema == {"$ref": error_ref}, where
            if "{" in path:
                assert "404" in responses or "403" in responses, where
            success = [s for s in responses if s.startswith("2")]
            assert success, where
            for status in success:
                content = responses[status].get("content", {})
                assert content, (where, status)
                if "application/json" in content:
                    assert content["application/json"].get("schema"), (where, status)
