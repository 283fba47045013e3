"""Worker and beat heartbeats: short-lived Redis keys that say which processes are alive.

A heartbeat is coordination, not a record: if Redis loses the keys, the next beat (every few
seconds) writes them again, and nothing about jobs depends on them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import redis

from app.settings import get_settings

log = logging.getLogger(__name__)

#: Seconds between beats, and how long a beat stays valid (three missed beats: gone).
BEAT_EVERY_S = 5.0
BEAT_TTL_S = 15


def _key_prefix() -> str:
    return f"{get_settings().CELERY_KEY_PREFIX}studio:heartbeat:"


@lru_cache
def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def redis_client() -> redis.Redis:
    """This process's Redis client for coordination (heartbeats)."""
    return _redis_client(get_settings().redis_url)


@dataclass(frozen=True)
class ProcessBeat:
    """What a live worker or beat process last said about itself.

    `name` is the process's own name (a worker's Celery node name, `studio-worker-<pid>@<host>`),
    `host` the machine it runs on.
    """

    role: str
    name: str
    host: str
    pid: int
    concurrency: int
    started_at: datetime
    seen_at: datetime

    @property
    def age_s(self) -> float:
        return max(0.0, (datetime.now(UTC) - self.seen_at).total_seconds())


class Heartbeat:
    """A daemon thread that refreshes `<prefix>studio:heartbeat:<role>:<name>:<pid>` in Redis.

    The key holds the process id as well as the name, so two processes can never share one
    heartbeat, even when started under the same name: each counts as alive on its own.
    """

    def __init__(self, role: str, name: str | None = None, concurrency: int = 0) -> None:
        self.role = role
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.name = name or f"{role}-{self.pid}@{self.host}"
        self.concurrency = concurrency
        self.started_at = datetime.now(UTC)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        return f"{_key_prefix()}{self.role}:{self.name}:{self.pid}"

    def beat(self) -> None:
        body = {
            "role": self.role,
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "concurrency": self.concurrency,
            "started_at": self.started_at.isoformat(),
            "seen_at": datetime.now(UTC).isoformat(),
        }
        redis_client().set(self.key, json.dumps(body), ex=BEAT_TTL_S)

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{self.role}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
        # A clean shutdown leaves the list at once instead of after the TTL.
        with contextlib.suppress(redis.RedisError):
            redis_client().delete(self.key)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.beat()
                if failing:
                    log.info("heartbeat restored", extra={"role": self.role})
                failing = False
            except redis.RedisError as exc:
                if not failing:
                    log.warning("heartbeat could not reach Redis: %s", type(exc).__name__)
                failing = True
            self._stop.wait(BEAT_EVERY_S)


def alive(role: str = "worker") -> list[ProcessBeat]:
    """Processes of `role` whose heartbeat has not expired (one each), by host and name."""
    client = redis_client()
    keys = sorted(client.scan_iter(match=f"{_key_prefix()}{role}:*", count=200))
    if not keys:
        return []
    beats: list[ProcessBeat] = []
    for raw in client.mget(keys):
        if raw is None:
            continue  # expired between SCAN and MGET
        try:
            data = json.loads(raw)
            beats.append(
                ProcessBeat(
                    role=str(data["role"]),
                    name=str(data["name"]),
                    host=str(data["host"]),
                    pid=int(data["pid"]),
                    concurrency=int(data.get("concurrency", 0)),
                    started_at=datetime.fromisoformat(data["started_at"]),
                    seen_at=datetime.fromisoformat(data["seen_at"]),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return sorted(beats, key=lambda b: (b.host, b.name, b.pid))


def wait_for(role: str, count: int, timeout: float) -> list[ProcessBeat]:
    """Poll until `count` processes of `role` beat or `timeout` passes (tests, `studio up`)."""
    deadline = time.monotonic() + timeout
    beats = alive(role)
    while len(beats) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        beats = alive(role)
    return beats
