"""Finds real PostgreSQL and Redis for the test run: configured, on 127.0.0.1, or embedded."""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

from app.embedded import EmbeddedPostgres, EmbeddedRedis, tcp_reachable

LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
_CACHE = Path(os.environ.get("STUDIO_TEST_CACHE", Path(tempfile.gettempdir()) / "studio-test"))


def postgres_server_url() -> str:
    """A URL to a server where the tests may create and drop databases."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    if tcp_reachable("127.0.0.1", 5432):
        return LOCAL_POSTGRES
    server = EmbeddedPostgres(_CACHE / f"pgdata-{os.getpid()}").start()
    atexit.register(server.stop)
    return server.url


def redis_url() -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    if tcp_reachable("127.0.0.1", 6379):
        return LOCAL_REDIS
    server = EmbeddedRedis(_CACHE / f"redis-{os.getpid()}").start(persist=False)
    atexit.register(server.stop)
    return server.url
