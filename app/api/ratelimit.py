"""Per-token request limits for the JSON API: a fixed one-minute window counted in Redis."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache

import redis
from fastapi import Request

from app.auth.deps import load_actor
from app.deps import SessionDep
from app.errors import StudioError
from app.settings import get_settings

log = logging.getLogger(__name__)

WINDOW_S = 60


class RateLimitExceeded(StudioError):
    """The token used up this minute's requests; `Retry-After` says when the next one counts."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            429,
            "rate_limited",
            f"This API token may make {limit} requests per minute; "
            f"wait {retry_after} s before the next one.",
            headers={
                "Retry-After": str(retry_after),
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": "0",
            },
        )
        self.retry_after = retry_after


@dataclass(frozen=True)
class Allowance:
    """The outcome of counting one request: whether it may go ahead and when the window ends."""

    allowed: bool
    count: int
    limit: int
    retry_after: int


@lru_cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


def window_key(subject: str, window: int) -> str:
    return f"{get_settings().CELERY_KEY_PREFIX}studio:api-rate:{subject}:{window}"


def count_request(subject: str, limit: int, now: float | None = None) -> Allowance | None:
    """Count one request of `subject` in the current minute; None when Redis cannot say.

    Redis is coordination only: when it is unreachable requests go through (and it is logged)
    rather than every API client being refused.
    """
    now = time.time() if now is None else now
    window = int(now // WINDOW_S)
    key = window_key(subject, window)
    try:
        pipe = _client(get_settings().redis_url).pipeline(transaction=True)
        pipe.incr(key)
        # Two windows' worth, so a slow clock between replicas never drops a live counter.
        pipe.expire(key, WINDOW_S * 2)
        count, _ = pipe.execute()
    except redis.RedisError as exc:
        log.warning("api rate limit unavailable: %s", exc)
        return None
    retry_after = max(1, math.ceil((window + 1) * WINDOW_S - now))
    return Allowance(
        allowed=int(count) <= limit, count=int(count), limit=limit, retry_after=retry_after
    )


def enforce_rate_limit(request: Request, db: SessionDep) -> None:
    """Router dependency: refuse an API token's request beyond its per-minute allowance.

    Browser sessions are not limited here: they are people clicking, and sign-in has its own
    throttle. A limit of 0 turns the check off.
    """
    limit = get_settings().API_RATE_LIMIT_PER_MINUTE
    if limit <= 0:
        return
    actor = load_actor(request, db)
    if actor is None or actor.token is None:
        return
    allowance = count_request(f"token:{actor.token.id}", limit)
    if allowance is not None and not allowance.allowed:
        raise RateLimitExceeded(limit, allowance.retry_after)
