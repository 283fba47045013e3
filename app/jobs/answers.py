"""BFL's answers to submissions, kept in Redis the moment they arrive, until PostgreSQL has them.

Once BFL answers a POST with a task id, the task exists and is charged: losing that answer
loses a paid image. PostgreSQL may be unavailable at that moment and the worker may die while
it waits for it, so the worker first writes the answer here (one hash per job, kept for a day)
and only then to PostgreSQL. The sweeper reads this record for every job still `submitting`
and applies it exactly as the worker would have (a guarded transition, charged once), so
`submission_unknown` is left for POSTs whose answer truly never arrived.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache

import redis

from app.settings import get_settings

log = logging.getLogger(__name__)

#: How long an answer is kept: far longer than any database outage the studio rides out.
ANSWER_TTL_S = 24 * 3600


@dataclass(frozen=True)
class KeptAnswer:
    """BFL's answer to one job's POST: its task id, polling URL, cost (credits) and when."""

    bfl_id: str
    polling_url: str | None
    cost_credits: Decimal
    accepted_at: datetime


def _key(job_id: uuid.UUID) -> str:
    return f"{get_settings().CELERY_KEY_PREFIX}studio:bfl-answer:{job_id}"


@lru_cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _redis() -> redis.Redis:
    return _client(get_settings().redis_url)


def keep(job_id: uuid.UUID, answer: KeptAnswer) -> bool:
    """Store BFL's answer for `job_id` for ANSWER_TTL_S seconds.

    Returns False (and logs) when Redis cannot take it: the caller still writes PostgreSQL,
    it only loses the safety net for a worker that dies before PostgreSQL takes the answer.
    """
    try:
        pipe = _redis().pipeline(transaction=True)
        pipe.hset(
            _key(job_id),
            mapping={
                "bfl_id": answer.bfl_id,
                "polling_url": answer.polling_url or "",
                "cost_credits": str(answer.cost_credits),
                "accepted_at": answer.accepted_at.isoformat(),
            },
        )
        pipe.expire(_key(job_id), ANSWER_TTL_S)
        pipe.execute()
    except redis.RedisError as exc:
        log.error(
            "could not keep BFL's answer for job %s (task %s) in Redis: %s",
            job_id,
            answer.bfl_id,
            exc,
        )
        return False
    return True


def find(job_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, KeptAnswer]:
    """The kept answers of these jobs, by job id (jobs without one are absent).

    Raises `redis.RedisError` when Redis cannot be read: the caller must then not conclude
    that no answer came.
    """
    ids = list(job_ids)
    if not ids:
        return {}
    pipe = _redis().pipeline(transaction=False)
    for job_id in ids:
        pipe.hgetall(_key(job_id))
    found: dict[uuid.UUID, KeptAnswer] = {}
    for job_id, raw in zip(ids, pipe.execute(), strict=True):
        answer = _parse(raw)
        if answer is not None:
            found[job_id] = answer
        elif raw:
            log.warning("ignoring an unreadable kept answer for job %s", job_id)
    return found


def forget(job_id: uuid.UUID) -> None:
    """Drop the kept answer once PostgreSQL holds it (a failure only leaves it to expire)."""
    try:
        _redis().delete(_key(job_id))
    except redis.RedisError as exc:
        log.info("could not drop the kept answer of job %s: %s", job_id, exc)


def _parse(raw: dict[bytes, bytes]) -> KeptAnswer | None:
    text = {k.decode(): v.decode() for k, v in raw.items()}
    bfl_id = text.get("bfl_id", "")
    if not bfl_id:
        return None
    try:
        cost = Decimal(text.get("cost_credits", ""))
        accepted_at = datetime.fromisoformat(text.get("accepted_at", ""))
    except (InvalidOperation, ValueError):
        return None
    if not cost.is_finite():
        return None
    if accepted_at.tzinfo is None:
        accepted_at = accepted_at.replace(tzinfo=UTC)
    return KeptAnswer(bfl_id, text.get("polling_url") or None, cost, accepted_at)
