"""The access and approval routes are described in /openapi.json with their schemas."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app


def _ref(operation: dict[str, object], status: str) -> object:
    responses = operation["responses"]
    assert isinstance(responses, dict)
    schema = dict(responses[status]["content"]["application/json"]["schema"])
    schema.pop("title", None)
    return schema


def test_access_and_approval_routes_carry_their_schemas() -> None:
    with TestClient(create_app(), base_url="https://testserver") as client:
        document = client.get("/openapi.json").json()
    paths = document["paths"]
    schemas = document["components"]["schemas"]
    rule_list = {"type": "array", "items": {"$ref": "#/components/schemas/AccessRuleOut"}}
    assert _ref(paths["/api/v1/access/rules"]["get"], "200") == rule_list
    assert _ref(paths["/api/v1/access/rules"]["put"], "200") == rule_list
    assert _ref(paths["/api/v1/access/quotas"]["put"], "200") == {
        "$ref": "#/components/schemas/QuotaOut"
    }
    approval = {"$ref": "#/components/schemas/ApprovalOut"}
    ask = paths["/api/v1/approvals"]["post"]
    assert _ref(ask, "201") == approval
    # The same body as POST /api/v1/jobs, JSON or multipart.
    assert set(ask["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert "prompt" in ask["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert _ref(paths["/api/v1/approvals"]["get"], "200") == {"type": "array", "items": approval}
    for path in (
        "/api/v1/approvals/{approval_id}",
        "/api/v1/approvals/{approval_id}/approve",
        "/api/v1/approvals/{approval_id}/decline",
    ):
        operation = next(iter(paths[path].values()))
        assert _ref(operation, "200") == approval, path
        assert "404" in operation["responses"], path
    assert set(schemas["ApprovalOut"]["required"]) >= {
        "id",
        "status",
        "requester",
        "model",
        "estimated_credits",
        "refused_reason",
        "job_ids",
    }
    catalogue = schemas["CatalogueOut"]["properties"]
    assert catalogue["access"]["$ref"] == "#/components/schemas/CallerAccessOut"
    assert {"available", "unavailable_reason"} <= set(schemas["ModelOut"]["properties"])
