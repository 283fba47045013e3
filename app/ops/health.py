"""Liveness and readiness probes: /healthz (process alive) and /readyz (dependencies reachable)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.db import get_engine, session_scope, utcnow
from app.jobs import account
from app.settings import get_settings

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The web process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check(fn: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        fn()
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__, "ms": _ms(started)}
    return {"ok": True, "ms": _ms(started)}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _database() -> None:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def _redis() -> None:
    client = redis.Redis.from_url(get_settings().redis_url, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _bfl() -> None:
    settings = get_settings()
    # Any HTTP answer proves the host is reachable; the key is not sent with this probe.
    httpx.get(settings.bfl_base_url.rstrip("/") + "/", timeout=3.0)


@router.get(
    "/readyz",
    summary="Database, Redis and BFL (or its emulator) are reachable",
    responses={503: {"description": "A dependency is unreachable"}},
)
def readyz() -> JSONResponse:
    checks = {"database": _check(_database), "redis": _check(_redis), "bfl": _check(_bfl)}
    ready = all(c["ok"] for c in checks.values())
    body: dict[str, Any] = {
        "status": "ready" if ready else "unavailable",
        "bfl_emulated": get_settings().bfl_emulated,
        "checks": checks,
    }
    if checks["database"]["ok"]:
        # What the workers found: an outage or rate limit of the BFL account, for the whole
        # studio ("BFL unreachable since 14:02 UTC — 37 jobs waiting").
        try:
            with session_scope() as db:
                body["bfl_account"] = account.status(db, get_settings(), utcnow()).as_dict()
        except Exception as exc:
            body["bfl_account"] = {"error": type(exc).__name__}
    return JSONResponse(body, status_code=200 if ready else 503)
