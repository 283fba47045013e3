"""Creating, cancelling, retrying and finding jobs: the rules the pages and the JSON API share."""

from __future__ import annotations

import io
import random
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, exists, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from app.access import policy
from app.audit.service import record
from app.auth.models import User
from app.bfl.catalogue import (
    MAX_REFERENCE_IMAGES,
    count_reference_images,
    estimate_payload_cost,
    get_model,
    output_size,
    reference_field_names,
    validate_request,
)
from app.costs.service import reserve_for_jobs
from app.db import utcnow
from app.errors import FieldError, Forbidden, RequestInvalid
from app.jobs import messages, references, state
from app.jobs.errors import JobError as JobError
from app.jobs.errors import JobNotFound
from app.jobs.models import Favourite, Job, JobStatus, ReferenceImage
from app.jobs.queries import team_job
from app.jobs.references import STORED_PREFIX as STORED_PREFIX
from app.projects.service import project_for_new_jobs
from app.settings import get_settings
from app.units import size_text

#: Seeds BFL accepts (the catalogue's bound); batches wrap around at the top.
_SEED_SPACE = 2**32
#: Random seeds stay below 2**31 so they read the same in every tool and language.
_RANDOM_SEED_LIMIT = 2**31
#: Fields the studio fills itself; a caller setting them would redirect BFL's callbacks.
_INTERNAL_FIELDS = ("webhook_url", "webhook_secret")
#: Valid base64 that stands in for a stored reference while the catalogue validates a request.
_PLACEHOLDER = "c3RvcmVk"

RETRYABLE_STATUSES = frozenset({JobStatus.FAILED, JobStatus.MODERATED, JobStatus.CANCELLED})


#: The arguments of `create_jobs` a refusal names as they are; every other field is one of
#: the model's request fields, under `params`.
_TOP_LEVEL_FIELDS = frozenset({"model", "prompt", "count", "reference_images", "project_id"})


def request_path(field: str) -> str:
    """The path of a request field as `create_jobs` takes it: `prompt`, `count`, ... at the
    top, the model's fields under `params` (`params.width`)."""
    if not field:
        return "request"
    if field in _TOP_LEVEL_FIELDS or field.split(".")[0] in _TOP_LEVEL_FIELDS:
        return field
    return f"params.{field}"


def _check_count(count: Any) -> int:
    limit = get_settings().MAX_BATCH_SIZE
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= limit:
        raise RequestInvalid(
            [FieldError("count", f"count must be a whole number from 1 to {limit}")]
        )
    return count


def _reference_limit(model: str) -> int:
    """How many reference images `model` takes (the most any model takes, for an unknown one:
    the catalogue then names the model as the problem)."""
    try:
        return get_model(model).max_reference_images
    except LookupError:
        return MAX_REFERENCE_IMAGES


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an image's bytes, or None when they are not an image PIL reads."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    except PILImage.DecompressionBombError:
        return None


def reference_size(db: Session, team_id: uuid.UUID, value: Any) -> tuple[int, int] | None:
    """(width, height) of a reference image field's value, for pricing; None when unknown.

    A stored reference (`stored:<key>`) is the team's `ReferenceImage` row (its normalised
    size, as stored and sent); an https URL is only fetched by BFL, so its size is unknown
    (priced as one megapixel).
    """
    if not isinstance(value, str) or not value.startswith(STORED_PREFIX):
        return None
    found = db.scalars(
        select(ReferenceImage).where(
            ReferenceImage.team_id == team_id,
            ReferenceImage.storage_key == value[len(STORED_PREFIX) :],
        )
    ).first()
    return (found.width, found.height) if found is not None else None


def upload_size_problem(upload: UploadFile) -> str | None:
    """Why an uploaded reference file is too large (read from its size, not its bytes), or None."""
    limit = get_settings().MAX_REFERENCE_IMAGE_BYTES
    if upload.size is not None and upload.size > limit:
        return (
            f"the file is larger than {size_text(limit)} (MAX_REFERENCE_IMAGE_BYTES); "
            "use a smaller file"
        )
    return None


def _fill_slots(
    model: str, given: dict[str, Any], uploads: Sequence[bytes | str]
) -> dict[str, bytes | str]:
    """The reference fields to decode, by name: inline data already in `given`, then `uploads`
    in the free fields after them. Raises `RequestInvalid` when there are too many."""
    limit = _reference_limit(model)
    names = reference_field_names(MAX_REFERENCE_IMAGES)
    slots = [n for n in reference_field_names(limit) if given.get(n) in (None, "")]
    if len(uploads) > len(slots):
        raise RequestInvalid(
            [
                FieldError(
                    "reference_images",
                    f"{model} takes at most {limit} reference images; send fewer"
                    if limit
                    else f"{model} does not take reference images; choose another model",
                )
            ]
        )
    found: dict[str, bytes | str] = {
        n: given[n] for n in names if references.is_inline(given.get(n))
    }
    found.update(zip(slots, uploads, strict=False))
    return found


def _store_references(
    db: Session,
    team_id: uuid.UUID,
    model: str,
    given: dict[str, Any],
    uploads: Sequence[bytes | str],
) -> list[tuple[int, ReferenceImage]]:
    """Decode and store every reference of a request, in field order; `given`'s reference
    fields become `stored:<key>`. Returns (position, reference) pairs (URLs have no row).

    The request is validated first with stand-ins, so a form error stores nothing.
    """
    inline = _fill_slots(model, given, uploads)
    probe = {**given, **{name: _PLACEHOLDER for name in inline}}
    _validate(model, probe)
    max_pixels = get_model(model).max_input_pixels
    own = re.compile(
        re.escape(f"{STORED_PREFIX}teams/{team_id}/references/") + r"[0-9a-f]{64}\.(?:jpg|png|webp)"
    )
    found: list[tuple[int, ReferenceImage]] = []
    for position, name in enumerate(reference_field_names(MAX_REFERENCE_IMAGES), start=1):
        value = inline.get(name, given.get(name))
        if name in inline:
            # A field of the request is named as sent; a file of `reference_images` by the list.
            field = name if references.is_inline(given.get(name)) else "reference_images"
            decoded = references.decode_reference(
                inline[name], field=field, position=position, max_input_pixels=max_pixels
            )
            ref = references.store_reference(db, team_id, decoded)
        elif isinstance(value, str) and value.startswith(STORED_PREFIX):
            # Only one of this team's own references, named exactly as they are stored.
            if not own.fullmatch(value):
                raise RequestInvalid(
                    [FieldError(name, f"{name} refers to an image that is not yours")]
                )
            ref = references.stored_reference(
                db,
                team_id,
                value[len(STORED_PREFIX) :],
                field=name,
                position=position,
                max_input_pixels=max_pixels,
            )
        else:
            continue
        given[name] = STORED_PREFIX + ref.storage_key
        found.append((position, ref))
    return found


def _validate(model: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """`validate_request`, with stored reference keys standing aside while it checks."""
    stored = {k: v for k, v in params.items() if isinstance(v, str) and v.startswith(STORED_PREFIX)}
    checked = {k: (_PLACEHOLDER if k in stored else v) for k, v in params.items()}
    payload = validate_request(model, checked)
    for name, value in stored.items():
        if name in payload:
            payload[name] = value
    return payload


def _seeds(first: int | None, count: int) -> list[int]:
    if first is None:
        return [random.randrange(_RANDOM_SEED_LIMIT) for _ in range(count)]
    return [(first + i) % _SEED_SPACE for i in range(count)]


def create_jobs(
    db: Session,
    *,
    user_id: uuid.UUID,
    team_id: uuid.UUID,
    model: str,
    params: Mapping[str, Any],
    count: int = 1,
    reference_images: Sequence[bytes | str] = (),
    retry_of: Job | None = None,
    approved: bool = False,
    project_id: uuid.UUID | None = None,
) -> list[Job]:
    """Queue `count` images of one request, each with its own seed, as one batch.

    The jobs belong to the team's project `project_id` (None: the person's last used project,
    else the team's default; see `app.projects.service.project_for_new_jobs`), which is
    remembered as their last used one. Raises `NotFound` (404) for a project outside the team
    and `RequestInvalid` (`project_id`) for an archived one.

    Every limit is checked here, for the API and the page alike: the catalogue's (prompt
    length, fields, reference images per model) and the settings' (MAX_BATCH_SIZE, image
    bytes and pixels). Raises `RequestInvalid` naming each field by its path (`prompt`,
    `count`, `reference_images`, `params.width`), `app.access.policy.AccessLimited` (the
    team's rules for this person: models, sizes, batch size) and
    `app.costs.service.BudgetExceeded`. `approved`: a manager approved this very request,
    so neither the access rules nor the budgets refuse it (its cost is still held and
    charged). Flushes; the caller's commit sends the wake-ups.
    """
    try:
        return _create_jobs(
            db,
            user_id=user_id,
            team_id=team_id,
            model=model,
            params=params,
            count=count,
            reference_images=reference_images,
            retry_of=retry_of,
            approved=approved,
            project_id=project_id,
        )
    except RequestInvalid as exc:
        raise exc.at_paths(request_path) from None


def _create_jobs(
    db: Session,
    *,
    user_id: uuid.UUID,
    team_id: uuid.UUID,
    model: str,
    params: Mapping[str, Any],
    count: int = 1,
    reference_images: Sequence[bytes | str] = (),
    retry_of: Job | None = None,
    approved: bool = False,
    project_id: uuid.UUID | None = None,
) -> list[Job]:
    count = _check_count(count)
    project = project_for_new_jobs(db, team_id=team_id, user_id=user_id, project_id=project_id)
    given = dict(params)
    for name in _INTERNAL_FIELDS:
        if given.get(name) not in (None, ""):
            raise RequestInvalid([FieldError(name, f"{name} is set by the studio; leave it out")])
        given.pop(name, None)

    refs = _store_references(db, team_id, model, given, reference_images)
    payload = _validate(model, given)
    seed = payload.pop("seed", None)
    # BFL prices each reference by its megapixels, and an edit with no size follows the first.
    by_position = {position: (ref.width, ref.height) for position, ref in refs}
    sizes = [
        by_position.get(position)
        for position, name in enumerate(reference_field_names(MAX_REFERENCE_IMAGES), start=1)
        if payload.get(name)
    ]
    width, height = output_size(model, payload, sizes[0] if sizes else None)
    if not approved:
        # Before anything is reserved or sent: the team's rules for this person.
        policy.check_request(
            db,
            team_id=team_id,
            user_id=user_id,
            model=model,
            width=width,
            height=height,
            count=count,
        )
    estimate = estimate_payload_cost(
        model, payload, reference_sizes=sizes, credit_price_usd=get_settings().CREDIT_PRICE_USD
    ).credits
    batch_id = uuid.uuid4()

    jobs: list[Job] = []
    # A savepoint around the inserts and the budget check: a refusal takes the new rows with
    # it, so even a caller that catches BudgetExceeded and commits keeps no unbudgeted jobs.
    with db.begin_nested():
        for index, job_seed in enumerate(_seeds(seed, count)):
            job_params = {**payload, "seed": job_seed}
            job = Job(
                id=uuid.uuid4(),
                team_id=team_id,
                user_id=user_id,
                project_id=project.id,
                status=JobStatus.QUEUED,
                model=model,
                prompt=str(payload.get("prompt", "")),
                params=job_params,
                width=width,
                height=height,
                seed=job_seed,
                output_format=str(payload.get("output_format", "jpeg")),
                reference_count=count_reference_images(payload),
                batch_id=batch_id,
                batch_index=index,
                retry_of_id=retry_of.id if retry_of is not None else None,
                estimated_credits=estimate,
            )
            db.add(job)
            jobs.append(job)
        db.flush()
        references.link_references(db, jobs, [ref for _, ref in refs])
        reserve_for_jobs(db, jobs, enforce=not approved)
    # One wake-up per job, capped: each one that claims a job chains the next while slots
    # are free, so more than the cap would only be messages that find nothing to do.
    messages.wake_dispatcher(db, min(len(jobs), get_settings().BFL_MAX_ACTIVE_TASKS))
    return jobs


def cancel_job(
    db: Session,
    *,
    job_id: uuid.UUID,
    team_id: uuid.UUID,
    user_id: uuid.UUID,
    is_manager: bool,
) -> Job:
    """Cancel a queued job: its owner or a team manager may. Raises JobError otherwise."""
    job = team_job(db, team_id=team_id, job_id=job_id)
    if job.user_id != user_id and not is_manager:
        raise JobError(
            "Only the person who queued this job or a manager can cancel it.", "forbidden"
        )
    if job.status != JobStatus.QUEUED:
        raise JobError(_not_cancellable(job.status), "not_cancellable")
    done = state.cancel(db, job.id, by_name="" if job.user_id == user_id else "a manager")
    if done is None:
        # A worker claimed it between our read and our update.
        db.refresh(job)
        raise JobError(_not_cancellable(job.status), "not_cancellable")
    if job.user_id != user_id:
        _record_managers_cancel(db, done, user_id)
    return done


def _record_managers_cancel(db: Session, job: Job, manager_id: uuid.UUID) -> None:
    """A manager cancelling someone else's queued job is audited as "job.cancelled"."""
    manager = db.get(User, manager_id)
    owner = db.get(User, job.user_id)
    record(
        db,
        team_id=job.team_id,
        actor_id=manager_id,
        actor_email=manager.email if manager else "",
        action="job.cancelled",
        target_type="job",
        target_id=job.id,
        before={"owner": owner.email if owner else None, "status": JobStatus.QUEUED},
        after={"status": JobStatus.CANCELLED},
    )


def _not_cancellable(status: str) -> str:
    if status in (JobStatus.SUBMITTING, JobStatus.PENDING):
        return "This job was already sent to BFL and cannot be cancelled; it will finish soon."
    if status == JobStatus.CANCELLED:
        return "This job is already cancelled."
    return "This job has already finished, so there is nothing to cancel."


def retry_job(
    db: Session, *, job_id: uuid.UUID, team_id: uuid.UUID, user_id: uuid.UUID
) -> list[Job]:
    """Queue a new job with the same request as a failed, moderated or cancelled one."""
    job = team_job(db, team_id=team_id, job_id=job_id)
    if job.status not in RETRYABLE_STATUSES:
        raise JobError(
            f"Only failed, moderated or cancelled jobs can be retried; this one is {job.status}.",
            "not_retryable",
        )
    return create_jobs(
        db,
        user_id=user_id,
        team_id=team_id,
        model=job.model,
        params=job.params,
        count=1,
        retry_of=job,
        project_id=job.project_id,
    )


def vary_job(db: Session, job: Job, *, team_id: uuid.UUID, user_id: uuid.UUID) -> list[Job]:
    """Queue one new job with the same request as `job` and a new random seed.

    `job` is one the caller already found in `team_id` (pages and the API each answer a missing
    one their own way); a job of another team or a deleted one is refused with JobError
    "not_found" all the same. Raises what `create_jobs` raises: `RequestInvalid`,
    `BudgetExceeded`.
    """
    if job.team_id != team_id or job.deleted_at is not None:
        raise JobNotFound()
    # Without a seed, create_jobs draws a fresh random one.
    params = {k: v for k, v in (job.params or {}).items() if k != "seed"}
    return create_jobs(
        db,
        user_id=user_id,
        team_id=team_id,
        model=job.model,
        params=params,
        count=1,
        project_id=job.project_id,
    )


def set_favourite(
    db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID, job_id: uuid.UUID, on: bool
) -> bool:
    """Mark or unmark a job as one of the person's favourites; returns the new state.

    Raises JobNotFound for a job not in the team (or deleted).
    """
    team_job(db, team_id=team_id, job_id=job_id)
    if on:
        db.execute(
            insert(Favourite)
            .values(user_id=user_id, job_id=job_id, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=[Favourite.user_id, Favourite.job_id])
        )
    else:
        db.execute(
            delete(Favourite).where(Favourite.user_id == user_id, Favourite.job_id == job_id)
        )
    db.flush()
    return on


def toggle_favourite(
    db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID, job_id: uuid.UUID
) -> bool:
    """Flip the person's favourite mark on a job; returns the new state. Raises JobNotFound."""
    team_job(db, team_id=team_id, job_id=job_id)
    current = db.scalar(
        select(exists().where(Favourite.user_id == user_id, Favourite.job_id == job_id))
    )
    return set_favourite(db, team_id=team_id, user_id=user_id, job_id=job_id, on=not current)


def delete_job(
    db: Session, *, team_id: uuid.UUID, job_id: uuid.UUID, user_id: uuid.UUID, is_manager: bool
) -> None:
    """Hide a job from the gallery (soft delete). Its author or a manager may do it.

    The row stays, so costs and the ledger still add up; files are kept for the same reason.
    A job still waiting in the queue is cancelled first, so deleting it spends nothing; one
    already at BFL is paid for either way and finishes out of sight. Raises JobNotFound, or
    Forbidden for someone else's job without the manager role.
    """
    job = team_job(db, team_id=team_id, job_id=job_id)
    if job.user_id != user_id and not is_manager:
        raise Forbidden("Only the person who made this image or a manager can delete it.")
    if job.status == JobStatus.QUEUED:
        # A worker may claim it meanwhile; then the guarded update does nothing, as it should.
        state.cancel(db, job.id, by_name="" if job.user_id == user_id else "a manager")
    deleted = db.execute(
        update(Job)
        .where(Job.id == job_id, Job.team_id == team_id, Job.deleted_at.is_(None))
        .values(deleted_at=utcnow())
    ).rowcount  # type: ignore[attr-defined]
    db.flush()
    if deleted and job.user_id != user_id:
        _record_managers_deletion(db, job, user_id)


def _record_managers_deletion(db: Session, job: Job, manager_id: uuid.UUID) -> None:
    """A manager deleting someone else's job is audited as "job.deleted"."""
    manager = db.get(User, manager_id)
    owner = db.get(User, job.user_id)
    record(
        db,
        team_id=job.team_id,
        actor_id=manager_id,
        actor_email=manager.email if manager else "",
        action="job.deleted",
        target_type="job",
        target_id=job.id,
        before={"owner": owner.email if owner else None, "status": job.status, "deleted": False},
        after={"deleted": True},
    )
