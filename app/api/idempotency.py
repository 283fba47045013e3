"""Idempotency-Key for job creation: one key and body create jobs once, replays return them."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.db import utcnow
from app.errors import FieldProblem, StudioError
from app.jobs.models import IdempotencyRecord, Job
from app.jobs.references import fingerprint_bytes

HEADER = "Idempotency-Key"
#: How long a key is remembered: a retry comes within minutes; a day is generous.
KEEP_KEYS_FOR = timedelta(hours=24)
#: Celery task name of the hourly purge of forgotten keys (worker/api_tasks.py, beat schedule).
PURGE_KEYS_TASK = "api.purge_idempotency_keys"
#: Printable ASCII without spaces, like the keys clients generate (UUIDs, ULIDs, hashes).
KEY_PATTERN = r"^[!-~]{1,200}$"


class IdempotencyKeyReused(StudioError):
    """The key was already used for a different request body (or in another team)."""

    def __init__(self) -> None:
        super().__init__(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request; "
            "send a new key for a new request.",
            [FieldProblem(field=HEADER, message="already used with a different request body")],
        )


def request_fingerprint(
    *,
    model: str,
    params: Mapping[str, Any],
    count: int,
    reference_images: Sequence[bytes | str],
    project_id: uuid.UUID | None,
) -> str:
    """A digest of the whole job request, the same however the body was encoded.

    `project_id` counts like every other field: the same key sent for another project is a
    different request (IdempotencyKeyReused). Left out of the digest when not given, so a
    request without one keeps the digest it always had.
    """
    request: dict[str, Any] = {
        "model": model,
        "params": params,
        "count": count,
        "reference_images": [
            hashlib.sha256(fingerprint_bytes(data)).hexdigest() for data in reference_images
        ],
    }
    if project_id is not None:
        request["project_id"] = str(project_id)
    canonical = json.dumps(
        request,
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def claim_key(
    db: Session,
    *,
    user_id: uuid.UUID,
    team_id: uuid.UUID,
    key: str,
    fingerprint: str,
) -> list[uuid.UUID] | None:
    """Take the key for this request, or learn which jobs an earlier one created.

    None: the key is ours and the caller creates the jobs in this transaction, then calls
    `remember_jobs`. A list: the ids to replay. The row is inserted first: a concurrent request
    with the same key waits on the primary key until this transaction ends, then sees the
    committed jobs (or, after a rollback, takes the key itself), so two never both create.
    """
    inserted = db.execute(
        insert(IdempotencyRecord)
        .values(user_id=user_id, key=key, team_id=team_id, request_hash=fingerprint, job_ids=[])
        .on_conflict_do_nothing(index_elements=[IdempotencyRecord.user_id, IdempotencyRecord.key])
        .returning(IdempotencyRecord.key)
    ).first()
    if inserted is not None:
        return None
    record = db.scalars(
        select(IdempotencyRecord)
        .where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
        .execution_options(populate_existing=True)
    ).one()
    if record.request_hash != fingerprint or record.team_id != team_id:
        raise IdempotencyKeyReused()
    return [uuid.UUID(str(job_id)) for job_id in record.job_ids]


def remember_jobs(db: Session, *, user_id: uuid.UUID, key: str, jobs: Sequence[Job]) -> None:
    db.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
        .values(job_ids=[str(job.id) for job in jobs])
    )


def purge_expired_keys(db: Session, now: datetime | None = None) -> int:
    """Forget keys older than KEEP_KEYS_FOR; the same key after that creates new jobs."""
    cutoff = (now or utcnow()) - KEEP_KEYS_FOR
    result = db.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
