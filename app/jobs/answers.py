"""BFL's answers to submissions, kept in Redis the moment they arrive, until PostgreSQL has them.

Once BFL answers a POST with a task id, the task exists and is charged: losing that answer
loses a paid image. PostgreSQL may be unavailable at that moment and the worker may die while
it waits for it, so the worker first writes the answer here (one hash per job, kept for a day)
and only then to PostgreSQL. The sweeper reads this record for every job still `submitting`
and applies it exactly as the worker would have (a guarded transition, charged once), so
`submission_unknown` is left for POSTs whose answer truly never arrived.

When Redis cannot take an answer either, it goes to an append-only journal file under
DATA_DIR instead (fsynced), which the sweeper reads too when it runs on the same host.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

import redis

from app.settings import get_settings

log = logging.getLogger(__name__)

#: How long an answer is kept: far longer than any database outage the studio rides out.
ANSWER_TTL_S = 24 * 3600


@dataclass(frozen=True)
class KeptAnswer:
    """BFL's answer to one job's POST: its task id, polling URL, cost (credits) and when."""

    bfl_task_id: str
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
    """Store BFL's answer for `job_id` for ANSWER_TTL_S seconds (in the journal without Redis).

    Returns False (and logs) when neither Redis nor the journal can take it: the caller still
    writes PostgreSQL, it only loses the safety net for a worker that dies before PostgreSQL
    takes the answer.
    """
    try:
        pipe = _redis().pipeline(transaction=True)
        pipe.hset(
            _key(job_id),
            mapping={
                "bfl_task_id": answer.bfl_task_id,
                "polling_url": answer.polling_url or "",
                "cost_credits": str(answer.cost_credits),
                "accepted_at": answer.accepted_at.isoformat(),
            },
        )
        pipe.expire(_key(job_id), ANSWER_TTL_S)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning(
            "could not keep BFL's answer for job %s (task %s) in Redis (%s); using the journal",
            job_id,
            answer.bfl_task_id,
            exc,
        )
    else:
        return True
    try:
        _append_to_journal(job_id, answer)
    except OSError as exc:
        log.error(
            "could not keep BFL's answer for job %s (task %s) anywhere: %s",
            job_id,
            answer.bfl_task_id,
            exc,
        )
        return False
    return True


def find(job_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, KeptAnswer]:
    """The answers of these jobs kept in Redis, by job id (jobs without one are absent).

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


def find_in_journal(job_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, KeptAnswer]:
    """The answers of these jobs in this host's journal (empty when there is none)."""
    wanted = set(job_ids)
    return {job_id: a for job_id, a in _journal_entries() if job_id in wanted}


def prune_journal(outstanding: Iterable[uuid.UUID]) -> None:
    """Drop journal entries except those of `outstanding` jobs (still waiting in submitting).

    Entries older than ANSWER_TTL_S go too, as they do from Redis.
    """
    path = journal_path()
    if not path.exists():
        return
    keep_ids = set(outstanding)
    horizon = datetime.now(UTC).timestamp() - ANSWER_TTL_S
    try:
        with _journal_lock():
            entries = list(_journal_entries())
            kept = [
                (job_id, a)
                for job_id, a in entries
                if job_id in keep_ids and a.accepted_at.timestamp() > horizon
            ]
            if len(kept) == len(entries):
                return
            if not kept:
                path.unlink(missing_ok=True)
                return
            spare = path.with_suffix(".tmp")
            spare.write_text("".join(_journal_line(job_id, a) for job_id, a in kept))
            os.replace(spare, path)
    except OSError as exc:
        log.warning("could not prune the answer journal: %s", exc)


def journal_path() -> Path:
    """The journal of answers Redis could not take: DATA_DIR/journal/bfl-answers.jsonl."""
    return get_settings().DATA_DIR / "journal" / "bfl-answers.jsonl"


@contextlib.contextmanager
def _journal_lock() -> Iterator[None]:
    # Appends and the prune's rewrite exclude each other, so no appended line is lost.
    lock = journal_path().with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _journal_line(job_id: uuid.UUID, answer: KeptAnswer) -> str:
    entry = {
        "job_id": str(job_id),
        "bfl_task_id": answer.bfl_task_id,
        "polling_url": answer.polling_url or "",
        "cost_credits": str(answer.cost_credits),
        "accepted_at": answer.accepted_at.isoformat(),
    }
    return json.dumps(entry) + "\n"


def _append_to_journal(job_id: uuid.UUID, answer: KeptAnswer) -> None:
    with _journal_lock():
        fd = os.open(journal_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, _journal_line(job_id, answer).encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def _journal_entries() -> Iterator[tuple[uuid.UUID, KeptAnswer]]:
    try:
        lines = journal_path().read_text().splitlines()
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("could not read the answer journal: %s", exc)
        return
    for line in lines:
        try:
            entry = json.loads(line)
            job_id = uuid.UUID(str(entry.pop("job_id")))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a torn last line of a crashed append
        answer = _parse({str(k).encode(): str(v).encode() for k, v in entry.items()})
        if answer is not None:
            yield job_id, answer


def forget(job_id: uuid.UUID) -> None:
    """Drop the kept answer once PostgreSQL holds it (a failure only leaves it to expire)."""
    try:
        _redis().delete(_key(job_id))
    except redis.RedisError as exc:
        log.info("could not drop the kept answer of job %s: %s", job_id, exc)


def _parse(raw: dict[bytes, bytes]) -> KeptAnswer | None:
    text = {k.decode(): v.decode() for k, v in raw.items()}
    # Answers kept before the field was renamed say `bfl_id`; they live at most a few hours.
    bfl_task_id = text.get("bfl_task_id") or text.get("bfl_id", "")
    if not bfl_task_id:
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
    return KeptAnswer(bfl_task_id, text.get("polling_url") or None, cost, accepted_at)
