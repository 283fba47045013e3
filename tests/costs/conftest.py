"""Fixtures of the cost tests: the web app over a committed database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def client() -> Iterator[TestClient]:
    from app.main import create_app

    with TestClient(create_app(), base_url="https://testserver") as test_client:
        yield test_client
