"""How often one team's budgets are checked after its charges: once per short window.

A team's budgets are checked right after a charge, so a crossed threshold is announced within
seconds; at the pace of a big batch (tens of charges a second) one check per charge would be
a task per job, each reading the same sums. The first charge of a window sends one check due
at the window's end, and the charges after it in that window ride on it: the check runs after
their transactions committed, so it sees them. The window is one Redis key shared by every
worker; without Redis every charge sends its own check, as before.
"""

from __future__ import annotations

import logging
import uuid
from functools import lru_cache

import redis

from app.settings import get_settings

log = logging.getLogger(__name__)

#: Seconds from a window's first charge to the check that covers every charge in the window.
BUDGET_CHECK_WINDOW_S = 2.0
#: A charge this close to the end of the window starts the next one instead: its transaction
#: may not have committed by the time the window's check reads the sums.
_COMMIT_MARGIN_S = 0.5


@lru_cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _key(team_id: uuid.UUID) -> str:
    return f"{get_settings().CELERY_KEY_PREFIX}studio:budget-check:{team_id}"


def budget_check_countdown(team_id: uuid.UUID) -> float | None:
    """Seconds until the check of `team_id`'s budgets that a new charge should send, or None
    when a check already sent will cover it (due later than this charge's commit)."""
    window_ms = int(BUDGET_CHECK_WINDOW_S * 1000)
    try:
        client = _client(get_settings().redis_url)
        if client.set(_key(team_id), b"1", nx=True, px=window_ms):
            return BUDGET_CHECK_WINDOW_S
        left_ms = client.pttl(_key(team_id))
    except redis.RedisError as exc:
        log.warning("could not pace the budget check of team %s (%s); checking now", team_id, exc)
        return 0.0
    if isinstance(left_ms, int) and left_ms > _COMMIT_MARGIN_S * 1000:
        return None
    # The window is about to close (or its key just expired): this charge's own check.
    return max(0.0, left_ms / 1000.0) + _COMMIT_MARGIN_S if isinstance(left_ms, int) else 0.0
