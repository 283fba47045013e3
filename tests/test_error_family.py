"""One error family: every refusal is a StudioError mapped to HTTP in one place, and no route
catches the domain errors by hand."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

import pytest

import app.bfl
import app.bfl.errors
from app.auth.tokens import TokenError
from app.bfl.catalogue import validate_request
from app.costs.service import BudgetExceeded
from app.errors import STATUS_BY_CODE, FieldError, RequestInvalid, StudioError, status_for
from app.gallery.service import GalleryInputError
from app.jobs.errors import JobNotFound
from app.jobs.service import JobError, request_path

APP = Path(__file__).resolve().parents[1] / "app"
DOMAIN_ERRORS = {"RequestInvalid", "JobError", "BudgetExceeded"}


@pytest.mark.parametrize(
    ("code", "status"),
    [("not_found", 404), ("forbidden", 403), ("not_cancellable", 409), ("not_retryable", 409)],
)
def test_job_errors_take_their_status_from_the_one_table(code: str, status: int) -> None:
    error = JobError("refused", code, field="count")
    assert isinstance(error, StudioError)
    assert (error.status_code, error.code, error.message) == (status, code, "refused")
    assert [(f.field, f.message) for f in error.fields] == [("count", "refused")]
    assert status_for(code) == status


def test_budget_and_validation_errors_are_studio_errors() -> None:
    budget = BudgetExceeded("over", scope="team", remaining=Decimal(1), needed=Decimal(2))
    assert isinstance(budget, StudioError)
    assert (budget.status_code, budget.code) == (
        STATUS_BY_CODE["budget_exceeded"],
        "budget_exceeded",
    )
    assert budget.status_code == 402

    with pytest.raises(RequestInvalid) as caught:
        validate_request("flux-2-pro", {"prompt": "x", "width": 100})
    invalid = caught.value
    assert isinstance(invalid, StudioError)
    assert (invalid.status_code, invalid.code) == (422, "invalid_request")
    assert [f.field for f in invalid.fields] == ["width"]
    pathed = invalid.at_paths(request_path)
    assert [f.field for f in pathed.fields] == ["params.width"]
    assert "params.width" in pathed.message


def test_job_not_found_is_the_one_missing_job() -> None:
    missing = JobNotFound()
    assert isinstance(missing, JobError)
    assert (missing.status_code, missing.code) == (404, "not_found")


@pytest.mark.parametrize(
    ("error", "status", "code", "fields"),
    [
        (GalleryInputError("from", "bad date"), 422, "invalid_request", ["from"]),
        (TokenError("too long", "invalid_request", "name"), 422, "invalid_request", ["name"]),
        (TokenError("too many", "too_many_tokens"), 409, "too_many_tokens", []),
    ],
)
def test_input_and_token_errors_join_the_family(
    error: StudioError, status: int, code: str, fields: list[str]
) -> None:
    # Their HTTP status comes from the one table, so no route maps them by hand.
    assert isinstance(error, StudioError)
    assert (error.status_code, error.code) == (status, code)
    assert [f.field for f in error.fields] == fields
    assert status_for(code) == status


def test_request_paths_keep_top_level_fields() -> None:
    assert [request_path(f) for f in ("prompt", "count", "reference_images", "seed", "")] == [
        "prompt",
        "count",
        "reference_images",
        "params.seed",
        "request",
    ]
    assert str(FieldError("prompt", "prompt is required")) == "prompt is required"


def test_request_invalid_has_one_home() -> None:
    # The BFL client's family is for BFL's answers; our own validation is not among them.
    assert not hasattr(app.bfl.errors, "RequestInvalid")
    assert FieldError.__module__ == "app.errors"
    assert "RequestInvalid" not in app.bfl.__all__
    assert RequestInvalid.__module__ == "app.errors"


def _caught_names(handler: ast.ExceptHandler) -> set[str]:
    kinds = handler.type
    if kinds is None:
        return set()
    nodes = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
    return {n.id if isinstance(n, ast.Name) else getattr(n, "attr", "") for n in nodes}


@pytest.mark.parametrize(
    "module",
    sorted([*APP.glob("*/routes.py"), *APP.glob("*/api.py")]),
    ids=lambda p: str(p.relative_to(APP)),
)
def test_no_route_catches_the_domain_errors(module: Path) -> None:
    tree = ast.parse(module.read_text())
    caught = [
        (node.lineno, sorted(_caught_names(node) & DOMAIN_ERRORS))
        for node in ast.walk(tree)
        if isinstance(node, ast.ExceptHandler) and _caught_names(node) & DOMAIN_ERRORS
    ]
    assert caught == [], f"{module.name} catches {caught}; let the StudioError handler answer"
