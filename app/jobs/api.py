"""JSON API for jobs: create, get, list, cancel, retry, vary, favourite, delete; the models."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import exists, select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from app.access import policy
from app.access.schemas import CallerAccessOut, ModelAccessOut
from app.api import idempotency
from app.api.openapi import configured_by_settings
from app.api.schemas import BFL_BACKEND_HELP, BflBackend, bfl_backend
from app.auth.deps import Actor, ChangingActor, CurrentActor
from app.auth.models import User
from app.bfl.catalogue import MAX_REFERENCE_IMAGES, PROMPT_MAX_CHARS
from app.db import utcnow
from app.deps import SessionDep
from app.errors import FieldError, Forbidden, RequestInvalid, StudioError, error_responses
from app.jobs import account
from app.jobs.errors import JobNotFound
from app.jobs.models import Favourite, Image, Job
from app.jobs.moves import NOT_IN_TEAM, move_jobs
from app.jobs.queries import get_detail, image_file, team_job
from app.jobs.references import reference_bytes, reference_file, references_of
from app.jobs.schemas import ImageOut, JobBatchOut, JobOut
from app.jobs.service import (
    cancel_job,
    create_jobs,
    delete_job,
    retry_job,
    set_favourite,
    upload_size_problem,
    vary_job,
)
from app.limits import advertised_catalogue, read_form
from app.recipes.service import original_download
from app.settings import Settings, get_settings
from app.storage import ObjectMissing, StorageError, get_storage

router = APIRouter(tags=["jobs"])
#: A job's stored image, served under /images/{job_id}; the image is named by its job.
images_router = APIRouter()

_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
_BINARY = {"schema": {"type": "string", "format": "binary"}}

#: Text the database cannot store (NUL) is refused at the door, naming the field.
NO_NUL = r"^[^\x00]*$"
#: Longest plain (non-image) parameter value; real ones are a few characters.
_MAX_PARAM_TEXT = 1_000
#: Parameters are sizes, seeds and scales: anything beyond 64-bit integers is a mistake.
_MAX_PARAM_NUMBER = 2**63


def _problems_in(value: Any, path: str, problems: list[str]) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            problems.append(f"{path} cannot contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(f"{path} must be valid Unicode text")
        if not path.split(".")[-1].startswith("input_image") and len(value) > _MAX_PARAM_TEXT:
            problems.append(f"{path} is too long (at most {_MAX_PARAM_TEXT} characters)")
    elif isinstance(value, bool):
        return
    elif isinstance(value, int | float):
        if (isinstance(value, float) and not math.isfinite(value)) or abs(
            value
        ) > _MAX_PARAM_NUMBER:
            problems.append(f"{path} is out of range")
    elif isinstance(value, dict):
        for key, item in value.items():
            _problems_in(item, f"{path}.{key}", problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _problems_in(item, f"{path}.{index}", problems)


class JobCreate(BaseModel):
    """A request for `count` images of one prompt (JSON form of POST /api/v1/jobs)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        max_length=64,
        pattern=NO_NUL,
        description="A model name from GET /api/v1/models, e.g. flux-2-pro.",
    )
    # The prompt's length and the batch size are checked by the job service, as for the page
    # form; the schema advertises them (`count`'s maximum is the configured MAX_BATCH_SIZE,
    # filled in when /openapi.json is built).
    prompt: str = Field(
        min_length=1,
        pattern=NO_NUL,
        description="What the image should show.",
        json_schema_extra={"maxLength": PROMPT_MAX_CHARS},
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="The model's other request fields (width, height, seed, ...); "
        "see GET /api/v1/models for each model's fields and limits.",
    )
    count: int = Field(
        default=1, description="How many images (one batch).", json_schema_extra={"minimum": 1}
    )
    reference_images: list[str] = Field(
        default_factory=list,
        description="Reference images as base64 (or data: URLs), filling input_image, "
        "input_image_2, ... in order; each model's own limit is its max_reference_images.",
        json_schema_extra={"maxItems": MAX_REFERENCE_IMAGES},
    )
    project_id: uuid.UUID | None = Field(
        default=None,
        description="The team's project (GET /api/v1/projects) the jobs are paid from; "
        "omitted: the project you last used, else the team's default project.",
    )

    @field_validator("params")
    @classmethod
    def _params_storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems: list[str] = []
        if "prompt" in value:
            problems.append("params.prompt: put the prompt at the top level of the body")
        _problems_in(value, "params", problems)
        if problems:
            raise ValueError("; ".join(problems))
        return value


class JobCreateForm(BaseModel):
    """The multipart form of POST /api/v1/jobs: the same fields, with files for references."""

    model: str
    prompt: str = Field(json_schema_extra={"maxLength": PROMPT_MAX_CHARS})
    params: str | None = Field(default=None, description="The params object as JSON text.")
    count: int | None = Field(
        default=1, description="How many images (one batch).", json_schema_extra={"minimum": 1}
    )
    reference_images: list[bytes] = Field(
        default_factory=list,
        json_schema_extra={
            "items": {"type": "string", "format": "binary"},
            "maxItems": MAX_REFERENCE_IMAGES,
        },
        description="Image files (JPEG, PNG or WebP).",
    )
    project_id: uuid.UUID | None = Field(
        default=None, description="The team's project the jobs are paid from."
    )


@dataclass(frozen=True)
class JobRequest:
    """A job request as the service takes it, however the body was encoded."""

    model: str
    params: dict[str, Any]
    count: int
    reference_images: list[bytes | str]
    project_id: uuid.UUID | None = None


def _invalid(field: str, message: str) -> RequestInvalid:
    return RequestInvalid([FieldError(field, message)])


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise _invalid("body", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _invalid("body", "send a JSON object with model, prompt, params and count")
    return data


async def _form_body(request: Request) -> tuple[dict[str, Any], list[bytes]]:
    form = await read_form(request)
    data: dict[str, Any] = {}
    for name in ("model", "prompt", "count", "project_id"):
        value = form.get(name)
        if isinstance(value, str):
            data[name] = value
    params_text = form.get("params")
    if isinstance(params_text, str) and params_text.strip():
        try:
            data["params"] = json.loads(params_text)
        except (ValueError, RecursionError):
            raise _invalid("params", 'must be a JSON object, e.g. {"width": 1024}') from None
    uploads: list[bytes] = []
    for index, part in enumerate(form.getlist("reference_images")):
        if not isinstance(part, UploadFile):
            raise _invalid(f"reference_images.{index}", "upload image files in this field")
        if len(form.getlist("reference_images")) > MAX_REFERENCE_IMAGES:
            raise _invalid("reference_images", f"at most {MAX_REFERENCE_IMAGES} reference images")
        # Parsed files wait on disk; one over the limit is refused before it is read into memory.
        problem = upload_size_problem(part)
        if problem:
            raise _invalid(f"reference_images.{index}", problem)
        uploads.append(await part.read())
    return data, uploads


async def read_job_request(request: Request) -> JobRequest:
    """The body of POST /jobs: JSON (references as base64) or multipart (references as files)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    uploads: list[bytes] = []
    if content_type == "multipart/form-data":
        data, uploads = await _form_body(request)
    elif content_type in ("", "application/json") or content_type.endswith("+json"):
        data = await _json_body(request)
    else:
        raise StudioError(
            415,
            "unsupported_media_type",
            "Send the job as application/json or multipart/form-data.",
        )
    try:
        body = JobCreate.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    # The service's own base64 reading, naming this body's field (`reference_images.0`).
    encoded = [
        reference_bytes(text, field=f"reference_images.{i}", position=i + 1)
        for i, text in enumerate(body.reference_images)
    ]
    return JobRequest(
        model=body.model,
        params={**body.params, "prompt": body.prompt},
        count=body.count,
        reference_images=[*encoded, *uploads],
        project_id=body.project_id,
    )


def jobs_out(db: Session, actor: Actor, job_ids: Sequence[uuid.UUID]) -> list[JobOut]:
    """Full API views of the team's jobs `job_ids`, in that order, in one query."""
    if not job_ids:
        return []
    favourite = (
        exists()
        .where(Favourite.user_id == actor.user_id, Favourite.job_id == Job.id)
        .correlate(Job)
    )
    rows = db.execute(
        select(Job, Image, User.name, favourite)
        .join(User, User.id == Job.user_id)
        .outerjoin(Image, Image.job_id == Job.id)
        .where(Job.id.in_(list(job_ids)), Job.team_id == actor.team_id)
    ).all()
    bfl_state = account.peek(db)
    now = utcnow()
    refs = references_of(db, team_id=actor.team_id, job_ids=list(job_ids))
    by_id = {
        job.id: JobOut.of(
            job,
            image=image,
            author=author,
            favourite=bool(fav),
            next_try_at=account.next_try_at(job, bfl_state, now),
            references=refs.get(job.id, []),
        )
        for job, image, author, fav in rows
    }
    return [by_id[i] for i in job_ids if i in by_id]


JobRequestDep = Annotated[JobRequest, Depends(read_job_request)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        pattern=idempotency.KEY_PATTERN,
        description="Any unique string (a UUID, say). Resending the same key and request "
        "returns the jobs the first request created instead of queuing new ones.",
    ),
]

#: The answer to a replayed Idempotency-Key, next to the 201 of routes that queue jobs.
_REPLAY_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "model": JobBatchOut,
        "description": "An Idempotency-Key replay: the jobs the first request created.",
    },
    201: {"description": "The jobs were queued."},
}


def _replay(
    db: Session, actor: Actor, response: Response, key: str, fingerprint: str
) -> JobBatchOut | None:
    """Take `key` for this request; or, if an earlier request took it, the jobs that one made."""
    earlier = idempotency.claim_key(
        db, user_id=actor.user_id, team_id=actor.team_id, key=key, fingerprint=fingerprint
    )
    if earlier is None:
        return None
    response.status_code = 200
    response.headers["Idempotent-Replayed"] = "true"
    return JobBatchOut(jobs=jobs_out(db, actor, earlier), replayed=True)


_JOB_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": JobCreate.model_json_schema()},
            "multipart/form-data": {"schema": JobCreateForm.model_json_schema()},
        },
    }
}


@configured_by_settings
def _advertise_batch_size(document: dict[str, Any], settings: Settings) -> None:
    """`count`'s maximum in POST /api/v1/jobs is the configured MAX_BATCH_SIZE."""
    operation = document["paths"]["/api/v1/jobs"]["post"]
    for media in operation["requestBody"]["content"].values():
        count = media["schema"]["properties"]["count"]
        count["maximum"] = settings.MAX_BATCH_SIZE
        count["description"] = (
            f"How many images (one batch): at most {settings.MAX_BATCH_SIZE}, this studio's "
            "MAX_BATCH_SIZE."
        )


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobBatchOut,
    summary="Queue one image or a batch",
    openapi_extra=_JOB_CREATE_BODY,
    responses={**_REPLAY_RESPONSE, **error_responses(400, 402, 404, 409, 413, 415, 422)},
)
def create(
    actor: ChangingActor,
    job_request: JobRequestDep,
    db: SessionDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobBatchOut:
    """Queue `count` images of one prompt. References come as base64 in JSON or as files."""
    if idempotency_key is not None:
        fingerprint = idempotency.request_fingerprint(
            model=job_request.model,
            params=job_request.params,
            count=job_request.count,
            reference_images=job_request.reference_images,
            project_id=job_request.project_id,
        )
        earlier = _replay(db, actor, response, idempotency_key, fingerprint)
        if earlier is not None:
            return earlier
    jobs = create_jobs(
        db,
        user_id=actor.user_id,
        team_id=actor.team_id,
        model=job_request.model,
        params=job_request.params,
        count=job_request.count,
        reference_images=job_request.reference_images,
        project_id=job_request.project_id,
    )
    if idempotency_key is not None:
        idempotency.remember_jobs(db, user_id=actor.user_id, key=idempotency_key, jobs=jobs)
    return JobBatchOut(jobs=jobs_out(db, actor, [job.id for job in jobs]))


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    summary="One job",
    responses=error_responses(404, 422),
)
def get_one(job_id: uuid.UUID, actor: CurrentActor, db: SessionDep) -> JobOut:
    detail = get_detail(db, team_id=actor.team_id, job_id=job_id, viewer_id=actor.user_id)
    return JobOut.of(
        detail.job,
        image=detail.image,
        author=detail.author,
        favourite=detail.favourite,
        next_try_at=account.next_try_at(detail.job, account.peek(db), utcnow()),
        references=detail.references,
    )


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a queued job",
    responses=error_responses(403, 404, 409, 422),
)
def cancel(job_id: uuid.UUID, actor: ChangingActor, db: SessionDep) -> JobOut:
    """Only queued jobs can be cancelled (a job sent to BFL will finish); owner or manager."""
    job = cancel_job(
        db,
        job_id=job_id,
        team_id=actor.team_id,
        user_id=actor.user_id,
        is_manager=actor.is_manager,
    )
    return jobs_out(db, actor, [job.id])[0]


@router.post(
    "/jobs/{job_id}/retry",
    status_code=201,
    response_model=JobBatchOut,
    summary="Queue a failed, moderated or cancelled job again as a new job",
    responses=error_responses(402, 404, 409, 422),
)
def retry(job_id: uuid.UUID, actor: ChangingActor, db: SessionDep) -> JobBatchOut:
    jobs = retry_job(db, job_id=job_id, team_id=actor.team_id, user_id=actor.user_id)
    return JobBatchOut(jobs=jobs_out(db, actor, [job.id for job in jobs]))


@router.post(
    "/jobs/{job_id}/vary",
    status_code=201,
    response_model=JobBatchOut,
    summary="Queue the same request again with a new random seed",
    responses={**_REPLAY_RESPONSE, **error_responses(402, 403, 404, 422)},
)
def vary(
    job_id: uuid.UUID,
    actor: ChangingActor,
    db: SessionDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobBatchOut:
    """One new job with the model, prompt, references and settings of `job_id`; any state."""
    if idempotency_key is not None:
        # No prompt in these params, so this can never match the fingerprint of a POST /jobs:
        # one key names one request, whichever route it came to.
        fingerprint = idempotency.request_fingerprint(
            model="vary",
            params={"vary_of": str(job_id)},
            count=1,
            reference_images=(),
            project_id=None,
        )
        earlier = _replay(db, actor, response, idempotency_key, fingerprint)
        if earlier is not None:
            return earlier
    job = team_job(db, team_id=actor.team_id, job_id=job_id)
    jobs = vary_job(db, job, team_id=actor.team_id, user_id=actor.user_id)
    if idempotency_key is not None:
        idempotency.remember_jobs(db, user_id=actor.user_id, key=idempotency_key, jobs=jobs)
    return JobBatchOut(jobs=jobs_out(db, actor, [j.id for j in jobs]))


@router.put(
    "/jobs/{job_id}/favourite",
    response_model=JobOut,
    summary="Mark a job as one of your favourites",
    responses=error_responses(403, 404, 422),
)
def favourite_on(job_id: uuid.UUID, actor: ChangingActor, db: SessionDep) -> JobOut:
    """Idempotent: marking it again changes nothing. Favourites are each person's own."""
    set_favourite(db, team_id=actor.team_id, user_id=actor.user_id, job_id=job_id, on=True)
    return jobs_out(db, actor, [job_id])[0]


@router.delete(
    "/jobs/{job_id}/favourite",
    response_model=JobOut,
    summary="Unmark a job as one of your favourites",
    responses=error_responses(403, 404, 422),
)
def favourite_off(job_id: uuid.UUID, actor: ChangingActor, db: SessionDep) -> JobOut:
    """Idempotent: unmarking a job that is not a favourite changes nothing."""
    set_favourite(db, team_id=actor.team_id, user_id=actor.user_id, job_id=job_id, on=False)
    return jobs_out(db, actor, [job_id])[0]


class MoveIn(BaseModel):
    """Where a job goes: one of the team's active projects."""

    model_config = ConfigDict(extra="forbid")

    project_id: uuid.UUID | None = Field(
        default=None,
        description="Required: the team's active project (GET /api/v1/projects) to move the "
        "job to.",
    )


@router.post(
    "/jobs/{job_id}/project",
    response_model=JobOut,
    summary="Move a job to another project, with its cost",
    responses=error_responses(403, 404, 422),
)
def move_one(job_id: uuid.UUID, body: MoveIn, actor: ChangingActor, db: SessionDep) -> JobOut:
    """Its author or a manager may. The job's charge, reservation and daily spend move with it,
    so each project's costs stay equal to the ledger; the team's totals do not change. A
    project outside the team is 404 and an archived one 422, both naming `project_id`."""
    team_job(db, team_id=actor.team_id, job_id=job_id)
    outcome = move_jobs(
        db,
        team_id=actor.team_id,
        user_id=actor.user_id,
        is_manager=actor.is_manager,
        job_ids=[job_id],
        project_id=body.project_id,
    )
    for _, reason in outcome.refused:
        if reason == NOT_IN_TEAM:
            raise JobNotFound()
        raise Forbidden("Only the person who made this image or a manager can move it.")
    return jobs_out(db, actor, [job_id])[0]


@router.delete(
    "/jobs/{job_id}",
    response_model=JobOut,
    summary="Delete a job from the gallery",
    responses=error_responses(403, 404, 422),
)
def delete_one(job_id: uuid.UUID, actor: ChangingActor, db: SessionDep) -> JobOut:
    """Its author or a manager may; afterwards the job is not found anywhere (its cost counts).

    The answer is the job as it was deleted, with `deleted_at` set.
    """
    delete_job(
        db, team_id=actor.team_id, job_id=job_id, user_id=actor.user_id, is_manager=actor.is_manager
    )
    return jobs_out(db, actor, [job_id])[0]


# --- images ------------------------------------------------------------------------------


@images_router.get(
    "/images/{job_id}",
    response_model=ImageOut,
    tags=["images"],
    summary="Metadata of a ready job's image",
    responses=error_responses(404, 422),
)
def image_metadata(job_id: uuid.UUID, actor: CurrentActor, db: SessionDep) -> ImageOut:
    detail = get_detail(db, team_id=actor.team_id, job_id=job_id, viewer_id=actor.user_id)
    if detail.image is None:
        raise StudioError(
            404,
            "not_found",
            f"This job has no stored image (it is {detail.job.status}).",
        )
    return ImageOut.of(detail.image)


def _serve(db: Session, actor_team: uuid.UUID, job_id: uuid.UUID, variant: str) -> Response:
    found = image_file(db, team_id=actor_team, job_id=job_id, variant=variant)
    try:
        if variant == "original":
            # The original carries its recipe, as every download does (app/recipes).
            data = original_download(db, team_id=actor_team, job_id=job_id).data
        else:
            data = get_storage().get(found.key)
    except ObjectMissing:
        raise StudioError(
            404, "not_found", "The image file is missing from storage; ask an admin."
        ) from None
    except (StorageError, OSError):
        raise StudioError(
            503, "storage_unavailable", "Image storage cannot be read right now; retry shortly."
        ) from None
    return Response(
        content=data,
        media_type=found.content_type,
        headers={
            # Stored images never change under their key, and they belong to one team.
            "Cache-Control": "private, max-age=86400, immutable",
            "Content-Disposition": f'inline; filename="{found.filename}"',
        },
    )


@images_router.get(
    "/images/{job_id}/original",
    response_class=Response,
    tags=["images"],
    summary="The original image file",
    responses={
        200: {
            "description": "The image as BFL made it.",
            "content": {t: _BINARY for t in _IMAGE_TYPES},
        },
        **error_responses(404, 422, 503),
    },
)
def image_original(job_id: uuid.UUID, actor: CurrentActor, db: SessionDep) -> Response:
    return _serve(db, actor.team_id, job_id, "original")


@images_router.get(
    "/images/{job_id}/thumbnail",
    response_class=Response,
    tags=["images"],
    summary="The WebP thumbnail",
    responses={
        200: {"description": "A small WebP preview.", "content": {"image/webp": _BINARY}},
        **error_responses(404, 422, 503),
    },
)
def image_thumbnail(job_id: uuid.UUID, actor: CurrentActor, db: SessionDep) -> Response:
    return _serve(db, actor.team_id, job_id, "thumb")


# --- the model catalogue -----------------------------------------------------------------


class ModelFieldOut(BaseModel):
    name: str
    type: str
    label: str
    help: str
    default: Any
    required: bool
    minimum: float | None
    maximum: float | None
    multiple_of: int | None
    choices: list[str] | None
    max_length: int | None = Field(description="Longest text accepted, in characters.")
    internal: bool = Field(description="Filled by the studio or via reference_images.")


class PricingOut(BaseModel):
    first_megapixel_usd: str
    additional_megapixel_usd: str
    reference_megapixel_usd: str
    flat: bool
    confirmed: bool
    note: str


class ModelOut(BaseModel):
    name: str
    label: str
    family: str
    description: str
    speed: str
    quality: str
    price: str
    sizing: str
    fields: list[ModelFieldOut]
    max_reference_images: int
    active_task_cap: int | None = Field(
        description="BFL's own lower cap on this model's active tasks, if any; the studio "
        "holds the lower of it and limits.account_active_task_cap."
    )
    nominal_megapixels: int
    editing_safety_maximum: int | None = Field(
        description="Highest safety_tolerance when reference images are given, if lower."
    )
    pricing: PricingOut
    unconfirmed: list[str]
    available: bool = Field(
        default=True, description="Whether the caller may use this model in their team."
    )
    unavailable_reason: str | None = Field(
        default=None, description="Why not, and what to do (ask a manager, another model)."
    )


class LimitsOut(BaseModel):
    """Every limit a job request meets: BFL's (from the catalogue) and this studio's settings."""

    max_pixels: int = Field(description="Most output pixels (width x height) of any model.")
    megapixel: int = Field(description="Pixels in one billing megapixel.")
    prompt_max_chars: int = Field(description="Longest prompt, in characters, for every model.")
    max_reference_images: int = Field(
        description="Most reference images any model takes (see each model's own)."
    )
    bfl_account_active_task_cap: int = Field(
        description="BFL's published cap on an account's active tasks."
    )
    account_active_task_cap: int = Field(
        description="Jobs this studio lets run at BFL at once (BFL_MAX_ACTIVE_TASKS)."
    )
    max_batch_size: int = Field(description="Most images one request may ask for (count).")
    max_request_bytes: int = Field(description="Largest request body outside job routes.")
    max_job_request_bytes: int = Field(
        description="Largest body of POST /api/v1/jobs, reference images included."
    )
    max_reference_image_bytes: int = Field(description="Largest reference image file.")
    max_reference_image_pixels: int = Field(
        description="Most pixels a reference image may declare."
    )
    max_form_fields: int = Field(description="Most non-file fields in one form post.")
    max_form_field_bytes: int = Field(description="Largest single non-file form field.")


class CatalogueOut(BaseModel):
    """Every model the studio offers, its fields, limits and prices."""

    models: list[ModelOut]
    aspect_presets: dict[str, list[int]]
    limits: LimitsOut
    credit_price_usd: str
    bfl_backend: BflBackend = Field(description=BFL_BACKEND_HELP)
    access: CallerAccessOut = Field(
        description="The caller's own limits in this team: the rule they follow, size and "
        "batch caps, and which models they may use."
    )


@router.get(
    "/models",
    response_model=CatalogueOut,
    tags=["models"],
    summary="The model catalogue with limits and prices",
)
def models(actor: CurrentActor, db: SessionDep) -> CatalogueOut:
    """The catalogue with the limits in force: BFL's, this studio's configured ones and the
    team's rules for the caller (`access`, and each model's `available`)."""
    catalogue = advertised_catalogue(get_settings())
    limits, access = policy.caller_access(db, team_id=actor.team_id, user_id=actor.user_id)
    policy.mark_catalogue(catalogue, access)
    caller = CallerAccessOut(
        role="member" if limits.role == "member" else "manager",
        max_megapixels=limits.max_megapixels,
        max_side=limits.max_side,
        max_count=limits.max_count,
        models=[
            ModelAccessOut(name=e.name, available=e.available, reason=e.reason) for e in access
        ],
    )
    return CatalogueOut.model_validate(
        {**catalogue, "bfl_backend": bfl_backend(), "access": caller}
    )


__all__ = [
    "JobCreate",
    "JobRequest",
    "images_router",
    "jobs_out",
    "read_job_request",
    "router",
]


@router.get(
    "/references/{sha256}",
    response_class=Response,
    tags=["images"],
    summary="A stored reference image",
    responses={
        200: {
            "description": "The reference as stored and sent to BFL (EXIF orientation applied).",
            "content": {t: _BINARY for t in _IMAGE_TYPES},
        },
        **error_responses(404, 422),
    },
)
def reference_original(sha256: str, actor: CurrentActor, db: SessionDep) -> Response:
    return _serve_reference(db, actor.team_id, sha256, "original")


@router.get(
    "/references/{sha256}/thumbnail",
    response_class=Response,
    tags=["images"],
    summary="A stored reference image's WebP thumbnail",
    responses={
        200: {"description": "A small WebP preview.", "content": {"image/webp": _BINARY}},
        **error_responses(404, 422),
    },
)
def reference_thumbnail(sha256: str, actor: CurrentActor, db: SessionDep) -> Response:
    return _serve_reference(db, actor.team_id, sha256, "thumb")


def _serve_reference(db: Session, team_id: uuid.UUID, sha256: str, variant: str) -> Response:
    found = reference_file(db, team_id, sha256, variant)
    return Response(
        content=found.data,
        media_type=found.content_type,
        headers={
            # Named by its content: the bytes under one name never change.
            "Cache-Control": "private, max-age=86400, immutable",
            "Content-Disposition": f'inline; filename="{found.filename}"',
            "X-Content-Type-Options": "nosniff",
        },
    )
