"""Health probes answer for the process and for its dependencies."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import get_settings


def test_healthz_answers() -> None:
    with TestClient(create_app()) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_unreachable_bfl(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.embedded import free_port

    monkeypatch.setenv("EMULATOR_URL", f"http://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    try:
        with TestClient(create_app()) as client:
            response = client.get("/readyz")
    finally:
        get_settings.cache_clear()
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["bfl"]["ok"] is False
