"""Pages of the generate screen: the form, the live cost estimate and the live job cards."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session
from starlette.datastructures import FormData, UploadFile

from app.access import approvals, policy
from app.auth.deps import Actor, ActorView, ChangingActor, CurrentActor
from app.bfl.catalogue import (
    ASPECT_PRESETS,
    MAX_REFERENCE_IMAGES,
    FieldSpec,
    FieldType,
    ModelSpec,
    estimate_cost,
    estimate_payload_cost,
    get_model,
    list_models,
    output_size,
    reference_field_names,
)
from app.db import session_scope, utcnow
from app.deps import SessionDep
from app.errors import (
    FieldError,
    NotFound,
    RequestInvalid,
    StudioError,
    answer_refusals_with,
)
from app.jobs import account, references
from app.jobs.errors import JobNotFound
from app.jobs.models import BFLAccountState, Job, ReferenceImage
from app.jobs.queries import recent_jobs, team_job
from app.jobs.queue_view import QueueEntry, entry_for, team_queue
from app.jobs.references import STORED_PREFIX
from app.jobs.service import (
    JobError,
    cancel_job,
    create_jobs,
    image_size,
    retry_job,
    upload_size_problem,
)
from app.limits import advertised_catalogue, read_form
from app.projects.service import last_used_project, list_projects
from app.settings import get_settings
from app.templating import error_page, templates
from app.units import credits_text

router = APIRouter(tags=["pages"])

#: Fields the form lays out by hand; every other visible catalogue field is rendered from its spec.
_HAND_MADE = {
    "prompt",
    "width",
    "height",
    "aspect_ratio",
    "seed",
    "safety_tolerance",
    "output_format",
}
#: Cards shown under the form when the page loads.
_RECENT_CARDS = 12
#: Widest side the estimate prices; beyond it the number is a typo, not a size.
_MAX_ESTIMATE_SIDE = 65_536


@dataclass
class GenerateForm:
    """What the person typed, as text, plus the problems found with it, per field."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    stored_references: list[str] = field(default_factory=list)
    #: The stored references' rows, in order, for their thumbnails (filled by `_with_rows`).
    reference_rows: list[ReferenceImage] = field(default_factory=list)
    #: The refusal was for budget, quota or access: a manager may approve the request.
    approvable: bool = False

    def get(self, name: str, default: Any = "") -> str:
        value = self.values.get(name)
        return default if value is None else value

    @property
    def model(self) -> ModelSpec:
        try:
            return get_model(self.get("model"))
        except LookupError:
            return list_models()[0]


def _field_of(error_field: str) -> str:
    """Where on the form an error is shown, from the field path the service names
    (`params.width` is the form's `width`; every reference image is `reference_images`)."""
    name = error_field.removeprefix("params.")
    if name.startswith(("input_image", "reference_images")):
        return "reference_images"
    return name


def _extra_fields() -> list[FieldSpec]:
    """Visible fields some model takes that the form does not lay out by hand."""
    seen: dict[str, FieldSpec] = {}
    for spec in list_models():
        for f in spec.fields:
            if f.internal or f.name in _HAND_MADE or f.type is FieldType.IMAGE:
                continue
            seen.setdefault(f.name, f)
    return list(seen.values())


def _defaults(spec: ModelSpec) -> dict[str, str]:
    values = {"model": spec.name, "seed_mode": "random", "count": "1", "aspect_preset": "custom"}
    for f in spec.fields:
        if f.internal or f.default is None:
            continue
        values[f.name] = (
            ("true" if f.default else "") if isinstance(f.default, bool) else str(f.default)
        )
    width, height = values.get("width"), values.get("height")
    for name, size in ASPECT_PRESETS.items():
        if (width, height) == (str(size[0]), str(size[1])):
            values["aspect_preset"] = name
    return values


def _form_from_job(
    db: Session, job: Job, team_id: uuid.UUID, batch: Sequence[Job] = ()
) -> GenerateForm:
    """The form filled with a past job's settings ("use these settings"): model, prompt, every
    request field, its reference images (in order, from `job_references`), and from its batch
    (`batch`, the jobs of one request) the number of images and the first image's seed, so the
    same request comes out."""
    spec = _spec_or_default(job.model)
    values = _defaults(spec)
    for name, value in (job.params or {}).items():
        if name.startswith("input_image") or name in ("webhook_url", "webhook_secret"):
            continue
        if value is None:
            continue
        values[name] = ("true" if value else "") if isinstance(value, bool) else str(value)
    rows = references.references_of(db, team_id=team_id, job_ids=[job.id]).get(job.id, [])
    if rows and "width" not in (job.params or {}) and "height" not in (job.params or {}):
        # An edit that followed its first reference's size does so again.
        values["width"] = values["height"] = ""
    first = min(batch, key=lambda j: j.batch_index) if batch else job
    seed = first.result_seed if first.result_seed is not None else first.seed
    if batch:
        values["count"] = str(len(batch))
    if seed is not None:
        values["seed_mode"], values["seed"] = "fixed", str(seed)
    values["prompt"] = job.prompt
    values["aspect_preset"] = _preset_for(values.get("width"), values.get("height"))
    return GenerateForm(
        values=values,
        stored_references=[STORED_PREFIX + r.storage_key for r in rows],
        reference_rows=rows,
    )


def _with_rows(db: Session, state: GenerateForm, team_id: uuid.UUID) -> GenerateForm:
    """`state` with the rows of its stored references (unknown keys are dropped)."""
    keys = [k[len(STORED_PREFIX) :] for k in state.stored_references]
    rows = references.rows_for_keys(db, team_id, keys)
    state.reference_rows = rows
    state.stored_references = [STORED_PREFIX + r.storage_key for r in rows]
    return state


def batch_of(db: Session, job: Job) -> list[Job]:
    """The jobs of `job`'s batch in its team (just `job` when it has none)."""
    if job.batch_id is None:
        return [job]
    return list(
        db.scalars(
            select(Job).where(Job.team_id == job.team_id, Job.batch_id == job.batch_id)
        ).all()
    )


def _preset_for(width: str | None, height: str | None) -> str:
    if not width and not height:
        return "input"
    for name, size in ASPECT_PRESETS.items():
        if (width, height) == (str(size[0]), str(size[1])):
            return name
    return "custom"


def _spec_or_default(name: str | None) -> ModelSpec:
    try:
        return get_model(name or "")
    except LookupError:
        return list_models()[0]


def _own_reference(value: str, team_id: uuid.UUID) -> bool:
    # A stored reference may only be reused by the team that uploaded it.
    return value.startswith(f"{STORED_PREFIX}teams/{team_id}/")


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def read_generate_form(form: FormData, team_id: uuid.UUID) -> GenerateForm:
    """The submitted form as text values, keeping everything so the page can show it again."""
    state = GenerateForm()
    for name in ("model", "prompt", "seed_mode", "seed", "count", "aspect_preset", "project_id"):
        state.values[name] = _text(form, name)
    raw_prompt = form.get("prompt")
    # Browsers send a textarea's line breaks as CRLF but count each as one character against
    # its maxlength; as LF the prompt has the length the page allowed (and the API counts).
    prompt = raw_prompt.replace("\r\n", "\n") if isinstance(raw_prompt, str) else ""
    state.values["prompt"] = prompt
    booleans = _boolean_fields()
    for spec_field in _all_visible_fields():
        if spec_field in booleans:
            # A hidden "false" comes before each checkbox, so an unticked box still says so;
            # a ticked one adds "true" after it, and the last value is the answer.
            sent = [v.strip() for v in form.getlist(spec_field) if isinstance(v, str)]
            state.values[spec_field] = sent[-1] if sent else ""
        else:
            state.values[spec_field] = _text(form, spec_field)
    state.stored_references = [
        v
        for v in form.getlist("stored_reference")
        if isinstance(v, str) and _own_reference(v, team_id)
    ]
    return state


def _boolean_fields() -> set[str]:
    return {f.name for spec in list_models() for f in spec.fields if f.type is FieldType.BOOLEAN}


def _all_visible_fields() -> list[str]:
    names: dict[str, None] = {}
    for spec in list_models():
        for f in spec.fields:
            if not f.internal and f.type is not FieldType.IMAGE and f.name != "prompt":
                names.setdefault(f.name, None)
    return list(names)


def request_params(state: GenerateForm) -> tuple[dict[str, Any], int | None]:
    """The model's request fields from the form, and the batch size (None when unreadable).

    Only fields the chosen model takes are sent: the form keeps other models' inputs around
    (hidden) so switching back and forth loses nothing.
    """
    spec = state.model
    params: dict[str, Any] = {"prompt": state.get("prompt")}
    for f in spec.fields:
        if f.internal or f.type is FieldType.IMAGE or f.name in ("prompt", "seed"):
            continue
        value = state.get(f.name)
        if f.type is FieldType.BOOLEAN:
            # The form says "true" or "false" outright, and that is what BFL is sent: leaving
            # an unticked box out would let BFL's default (on, for some models) decide.
            # Nothing at all (a hand-made post) leaves the catalogue's default to apply.
            if value.lower() in ("true", "on", "1"):
                params[f.name] = True
            elif value.lower() in ("false", "off", "0"):
                params[f.name] = False
            elif value:
                params[f.name] = value  # the catalogue names the problem
            continue
        if value != "":
            params[f.name] = value
    if state.get("seed_mode") == "fixed":
        if state.get("seed") == "":
            state.errors["seed"] = "enter a seed number, or choose Random"
        else:
            params["seed"] = state.get("seed")
    for name, key in zip(
        reference_field_names(MAX_REFERENCE_IMAGES), state.stored_references, strict=False
    ):
        params[name] = key
    count_text = state.get("count") or "1"
    try:
        count: int | None = int(count_text)
    except ValueError:
        count = None
        limit = get_settings().MAX_BATCH_SIZE
        state.errors["count"] = f"number of images must be a whole number from 1 to {limit}"
    return params, count


async def _uploads(form: FormData, state: GenerateForm) -> list[bytes]:
    files: list[bytes] = []
    for position, item in enumerate(form.getlist("reference_images"), start=1):
        if isinstance(item, UploadFile) and item.filename:
            # Parsed files wait on disk; one over the limit is never read into memory.
            problem = upload_size_problem(item)
            if problem:
                state.errors["reference_images"] = f"reference image {position}: {problem}"
                return []
            files.append(await item.read())
            if len(files) > MAX_REFERENCE_IMAGES:
                # One more than any model takes is enough for the service to refuse them.
                break
    return files


def _estimate_context(
    state: GenerateForm, uploads: int, upload_sizes: Sequence[tuple[int, int] | None] = ()
) -> dict[str, Any]:
    """The price of what the form asks for, by `estimate_payload_cost` as the service reserves.

    `uploads` files are chosen (or sent); `upload_sizes` are their (width, height) where known.
    Stored references (`state.reference_rows`, their stored sizes) come first, as the service
    fills the fields; with no width and height an edit follows the first one's size.
    """
    spec = state.model
    payload = _size_fields(state)
    stored = [(r.width, r.height) for r in state.reference_rows]
    references = min(uploads + len(stored), spec.max_reference_images)
    # The same payload shape and the same function the service reserves with: reference
    # images count as filled input_image fields, sizes as width/height or aspect_ratio.
    for name in reference_field_names(references):
        payload[name] = "reference"
    chosen = [*upload_sizes[:uploads], *([None] * max(0, uploads - len(upload_sizes)))]
    sizes: list[tuple[int, int] | None] = [*stored, *chosen]
    if (
        references
        and spec.field("width") is not None
        and not (state.get("width") or state.get("height"))
    ):
        payload.pop("width", None)
        payload.pop("height", None)
    elif spec.field("width") is not None:
        payload["width"] = payload.get("width") or _default_side(spec, "width")
        payload["height"] = payload.get("height") or _default_side(spec, "height")
    width, height = output_size(spec, payload, sizes[0] if sizes else None)
    price = get_settings().CREDIT_PRICE_USD
    each = estimate_payload_cost(spec, payload, reference_sizes=sizes, credit_price_usd=price)
    count = _estimate_count(state)
    return {
        "model": spec,
        "count": count,
        "width": width,
        "height": height,
        "references": references,
        "each_credits": credits_text(each.credits),
        "each_usd": _usd(each.usd),
        "total_credits": credits_text(each.credits * count),
        "total_usd": _usd(each.usd * count),
    }


def _size_fields(state: GenerateForm) -> dict[str, Any]:
    """The form's width/height (pixels, None when blank or out of range) and aspect ratio,
    for the fields the model has; the payload an estimate starts from."""
    spec = state.model
    payload: dict[str, Any] = {}
    for name in ("width", "height", "aspect_ratio"):
        if spec.field(name) is None:
            continue
        value = state.get(name)
        if name == "aspect_ratio":
            payload[name] = value or "1:1"
            continue
        try:
            payload[name] = int(value) if value else None
        except ValueError:
            payload[name] = None
        if payload[name] is not None and not 0 < payload[name] <= _MAX_ESTIMATE_SIDE:
            # A size no model takes gets the default's price; the form's check says why.
            payload[name] = None
    return payload


def _estimate_count(state: GenerateForm) -> int:
    """The form's number of images, clamped to 1..MAX_BATCH_SIZE (1 when not a number)."""
    try:
        return max(1, min(int(state.get("count") or "1"), get_settings().MAX_BATCH_SIZE))
    except ValueError:
        return 1


def _default_side(spec: ModelSpec, name: str) -> int:
    found = spec.field(name)
    return int(found.default) if found is not None and found.default else 1024


def _usd(value: Decimal) -> str:
    # Cents always show two places ($0.60); a tenth of a cent adds the third ($0.015).
    if value >= 1:
        return f"${value:.2f}"
    text = f"{value:.3f}"
    return f"${text[:-1] if text.endswith('0') else text}"


def _page_context(
    request: Request,
    actor: Actor | ActorView,
    db: Session,
    state: GenerateForm,
    uploads: Sequence[bytes] = (),
) -> dict[str, Any]:
    settings = get_settings()
    state = _with_rows(db, state, actor.team_id)
    bfl_state = account.peek(db)
    bfl_account = account.status(db, settings, utcnow())
    access = _access_context(db, actor)
    catalogue = policy.mark_catalogue(
        advertised_catalogue(settings), list(access["model_access"].values())
    )
    recent = recent_jobs(db, team_id=actor.team_id, user_id=actor.user_id, limit=_RECENT_CARDS)
    entries = queue_entries(db, actor.team_id, recent)
    return access | {
        "actor": actor,
        "form": state,
        "models": list_models(),
        "model_prices": {
            m.name: credits_text(
                estimate_cost(
                    m, *output_size(m, {}), credit_price_usd=settings.CREDIT_PRICE_USD
                ).credits
            )
            for m in list_models()
        },
        "spec": state.model,
        "extra_fields": _extra_fields(),
        "presets": ASPECT_PRESETS,
        "catalogue_json": json.dumps(catalogue),
        "job_limits": catalogue["limits"],
        "estimate": _estimate_context(state, len(uploads), [image_size(f) for f in uploads]),
        "groups": group_cards([card(job, bfl_state, entries.get(job.id)) for job in recent]),
        "bfl_account": bfl_account if bfl_account.kind != "ok" else None,
        **_project_choice(db, actor, state),
    }


def _access_context(db: Session, actor: Actor | ActorView) -> dict[str, Any]:
    """The team's rules for the caller (which models, caps) and their recent approval requests."""
    limits, models = policy.caller_access(db, team_id=actor.team_id, user_id=actor.user_id)
    count_cap = get_settings().MAX_BATCH_SIZE
    if limits.max_count is not None:
        count_cap = min(count_cap, limits.max_count)
    mine = approvals.listing(
        db, team_id=actor.team_id, caller_id=actor.user_id, is_manager=False, limit=5
    )
    return {
        "model_access": {m.name: m for m in models},
        "caps": limits,
        "count_cap": count_cap,
        "my_approvals": [approvals.view(db, request, name) for request, name in mine],
    }


def _project_choice(db: Session, actor: Actor | ActorView, state: GenerateForm) -> dict[str, Any]:
    """The team's active projects and the one selected: as sent, else the last used one."""
    chosen = state.get("project_id") or str(
        last_used_project(db, team_id=actor.team_id, user_id=actor.user_id).id
    )
    return {
        "projects": list_projects(db, team_id=actor.team_id, include_archived=False),
        "selected_project": chosen,
    }


def _project_id(state: GenerateForm) -> uuid.UUID | None:
    """The form's project as an id (None: not chosen); a malformed one is a field error."""
    text = state.get("project_id").strip()
    if not text:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        state.errors["project_id"] = "choose one of the team's projects"
        return None


@router.get("/", response_class=HTMLResponse, summary="Generate page")
def generate_page(
    request: Request,
    actor: CurrentActor,
    db: SessionDep,
    prompt: str | None = None,
    model: str | None = None,
) -> Response:
    # "/?from=<job id>" fills the form with that job's settings; `from` is a keyword in Python.
    # "/?edit=<job id>" starts an edit of that job's image: it is reference image 1.
    from_id = request.query_params.get("from")
    edit_id = request.query_params.get("edit")
    state = GenerateForm(values=_defaults(_spec_or_default(model)))
    if from_id:
        job = team_job(db, team_id=actor.team_id, job_id=_uuid_or_404(from_id))
        state = _form_from_job(db, job, actor.team_id, batch_of(db, job))
    elif edit_id:
        state = _edit_form(db, actor.team_id, _uuid_or_404(edit_id), model)
    if prompt:
        state.values["prompt"] = prompt
    limits = policy.limits_for(db, team_id=actor.team_id, user_id=actor.user_id)
    if policy.model_problem(limits, state.model.name) is not None:
        # Start on a model the person may use; the others are listed, disabled, with why.
        usable = [m for m in list_models() if policy.model_problem(limits, m.name) is None]
        if usable and not from_id:
            state = GenerateForm(values={**_defaults(usable[0]), "prompt": state.get("prompt")})
    _fill_from_query(state, request.query_params)
    return templates.TemplateResponse(
        request, "jobs/generate.html", _page_context(request, actor, db, state)
    )


def _edit_form(
    db: Session, team_id: uuid.UUID, job_id: uuid.UUID, model: str | None
) -> GenerateForm:
    """The form for editing job `job_id`'s image: its model (one that takes references), the
    image as reference 1, and no size, so the result follows the image's size as BFL does."""
    job = team_job(db, team_id=team_id, job_id=job_id)
    spec = _spec_or_default(model or job.model)
    if spec.max_reference_images == 0:
        spec = next(m for m in list_models() if m.max_reference_images > 0)
    ref = references.reference_from_result(
        db, team_id=team_id, job_id=job_id, max_input_pixels=spec.max_input_pixels
    )
    values = _defaults(spec)
    values["width"] = values["height"] = ""
    values["aspect_preset"] = "input"
    return GenerateForm(
        values=values,
        stored_references=[STORED_PREFIX + ref.storage_key],
        reference_rows=[ref],
    )


@router.post("/references", summary="Store a reference image for the generate form")
async def upload_reference(request: Request, actor: ChangingActor, db: SessionDep) -> Response:
    """One file (`file`), checked and stored like every reference; answers its key, thumbnail
    link and size as JSON, or 422 naming the problem. Used by the form's picker, drop and paste."""
    form = await read_form(request)
    item = form.get("file")
    if not isinstance(item, UploadFile):
        raise RequestInvalid([FieldError("file", "choose an image file to upload")])
    problem = upload_size_problem(item)
    if problem:
        raise RequestInvalid([FieldError("file", problem)])
    spec = _spec_or_default(_text(form, "model"))
    decoded = references.decode_reference(
        await item.read(),
        field="input_image",
        position=1,
        max_input_pixels=spec.max_input_pixels,
    )
    ref = references.store_reference(db, actor.team_id, decoded)
    return JSONResponse(_reference_json(ref))


def _reference_json(ref: ReferenceImage) -> dict[str, Any]:
    return {
        "key": STORED_PREFIX + ref.storage_key,
        "sha256": ref.sha256,
        "thumbnail_url": f"/references/{ref.sha256}/thumb",
        "url": f"/references/{ref.sha256}",
        "width": ref.width,
        "height": ref.height,
    }


def _fill_from_query(state: GenerateForm, query: Any) -> None:
    """Settings named in the address ("/?model=flux-2-flex&steps=30&seed=7", what an imported
    recipe leads to) fill the form; the service checks them when it is sent."""
    names = {f.name for f in state.model.fields if not f.internal and f.type is not FieldType.IMAGE}
    for name in sorted(names - {"prompt"}):
        value = query.get(name)
        if value is not None:
            state.values[name] = value.strip()[:200]
    if (query.get("seed") or "").strip():
        state.values["seed_mode"] = "fixed"
    state.values["aspect_preset"] = _preset_for(
        state.values.get("width"), state.values.get("height")
    )


@router.get("/generate/estimate", response_class=HTMLResponse, summary="Cost estimate fragment")
def estimate_fragment(request: Request, actor: CurrentActor, db: SessionDep) -> Response:
    query = request.query_params
    state = GenerateForm(values={k: query.get(k, "") for k in query})
    state.stored_references = [
        v for v in query.getlist("stored_reference") if _own_reference(v, actor.team_id)
    ]
    state = _with_rows(db, state, actor.team_id)
    try:
        uploads = max(0, min(int(query.get("reference_count") or 0), MAX_REFERENCE_IMAGES))
    except ValueError:
        uploads = 0
    sizes = _sizes(query.get("reference_sizes") or "")
    return templates.TemplateResponse(
        request, "jobs/_estimate.html", {"estimate": _estimate_context(state, uploads, sizes)}
    )


def _sizes(text: str) -> list[tuple[int, int] | None]:
    """The chosen files' sizes the page read ("1024x768,640x480"); None for an unreadable one."""
    sizes: list[tuple[int, int] | None] = []
    for item in text.split(",")[:MAX_REFERENCE_IMAGES] if text else []:
        width, _, height = item.strip().partition("x")
        sides = (int(width), int(height)) if width.isdigit() and height.isdigit() else (0, 0)
        fits = all(0 < side <= _MAX_ESTIMATE_SIDE for side in sides)
        sizes.append(sides if fits else None)
    return sizes


@router.post("/generate", response_class=HTMLResponse, summary="Queue images from the form")
async def generate(request: Request, actor: ChangingActor, db: SessionDep) -> Response:
    form = await read_form(request)
    state = read_generate_form(form, actor.team_id)
    files = await _uploads(form, state)
    params, count = request_params(state)
    project_id = _project_id(state)
    jobs: list[Job] = []
    # A refusal by the service is shown on the form, next to the fields it names.
    answer_refusals_with(request, lambda exc: _refused_form(request, state, files, exc))
    if not state.errors and count is not None:
        jobs = create_jobs(
            db,
            user_id=actor.user_id,
            team_id=actor.team_id,
            model=state.get("model"),
            params=params,
            count=count,
            reference_images=files,
            project_id=project_id,
        )
    return _form_answer(request, actor, db, state, files, jobs)


def _form_answer(
    request: Request,
    actor: Actor | ActorView,
    db: Session,
    state: GenerateForm,
    files: Sequence[bytes],
    jobs: Sequence[Job],
) -> Response:
    """The form again with its errors (422, or 200 for htmx), or the new jobs' cards."""
    _place_errors(state)
    failed = bool(state.errors or state.general)
    if not request.headers.get("hx-request"):
        if not failed:
            return RedirectResponse("/", status_code=303)
        context = _page_context(request, actor, db, state, files)
        return templates.TemplateResponse(request, "jobs/generate.html", context, status_code=422)
    context = _page_context(request, actor, db, state, files)
    entries = queue_entries(db, actor.team_id, jobs)
    context["new_groups"] = group_cards([card(job, None, entries.get(job.id)) for job in jobs])
    # htmx swaps 2xx answers only; field errors are a normal outcome of this form.
    return templates.TemplateResponse(request, "jobs/_generate_response.html", context)


def _refused_form(
    request: Request, state: GenerateForm, files: Sequence[bytes], exc: StudioError
) -> Response | None:
    """The form showing the service's refusal (a request, budget or job error), or None.

    Called by the error handler after the request's session was rolled back and closed, so
    the recent jobs are read in a session of its own and the caller from its plain view.
    """
    actor = getattr(request.state, "actor_view", None)
    if actor is None or exc.status_code not in (402, 403, 409, 422):
        return None
    _record_refusal(state, exc)
    with session_scope() as db:
        return _form_answer(request, actor, db, state, files, [])


def _record_refusal(state: GenerateForm, exc: StudioError) -> None:
    state.approvable = exc.code in ("budget_exceeded", "access_limited")
    if isinstance(exc, RequestInvalid):
        for problem in exc.errors:
            state.errors.setdefault(_field_of(problem.field), problem.message)
    elif isinstance(exc, JobError) and exc.field:
        state.errors.setdefault(_field_of(exc.field), exc.message)
    else:
        state.general.append(exc.message)


def _place_errors(state: GenerateForm) -> None:
    """Errors for fields the chosen model's form does not show go to the list at the top."""
    shown = {"model", "prompt", "seed", "count", "reference_images", *_all_visible_fields()}
    for name in list(state.errors):
        if name not in shown:
            state.general.append(state.errors.pop(name))


@dataclass(frozen=True)
class JobCard:
    """What a live job card shows."""

    job: Job
    elapsed_s: int
    cost: str
    estimate: str
    #: For a queued job that waits for BFL: when it will be tried next ("14:05:10 UTC").
    next_try: str | None = None
    #: The job's reference images, position 1 first.
    references: Sequence[ReferenceImage] = ()
    #: For a queued job: its position, estimated start and why it waits.
    queue: QueueEntry | None = None

    @property
    def starts(self) -> str | None:
        """The queued job's estimated start as "14:05:10 UTC", or None when unknown."""
        when = self.queue.estimated_start if self.queue is not None else None
        return when.strftime("%H:%M:%S UTC") if when is not None else None

    @property
    def terminal(self) -> bool:
        return self.job.status.terminal

    @property
    def percent(self) -> int | None:
        if self.job.progress is None:
            return None
        return max(0, min(100, round(self.job.progress * 100)))

    @property
    def retryable(self) -> bool:
        return self.job.status in ("failed", "moderated", "cancelled")


def card(
    job: Job, bfl_account: BFLAccountState | None = None, entry: QueueEntry | None = None
) -> JobCard:
    """A job's card; pass the account state to show when a waiting job is tried next, and
    its queue entry (app.jobs.queue_view) to show its position and why it waits."""
    now = utcnow()
    db = object_session(job)
    refs = (
        references.references_of(db, team_id=job.team_id, job_ids=[job.id]).get(job.id, [])
        if db
        else []
    )
    end = job.finished_at or now
    next_try = account.next_try_at(job, bfl_account, now)
    return JobCard(
        job=job,
        elapsed_s=max(0, int((end - job.created_at).total_seconds())),
        cost=credits_text(job.cost_credits),
        estimate=credits_text(job.estimated_credits),
        next_try=next_try.strftime("%H:%M:%S UTC") if next_try is not None else None,
        references=refs,
        queue=entry,
    )


@dataclass
class CardGroup:
    """Cards shown together: one batch (more than one image of one request) or a single job."""

    batch_id: uuid.UUID | None
    cards: list[JobCard]

    @property
    def is_batch(self) -> bool:
        return len(self.cards) > 1

    @property
    def queued(self) -> int:
        return sum(1 for c in self.cards if c.job.status == "queued")

    @property
    def retryable(self) -> int:
        return sum(1 for c in self.cards if c.retryable)

    @property
    def live(self) -> bool:
        """Whether any job of the group may still change (the group then refreshes itself)."""
        return any(not c.terminal for c in self.cards)

    @property
    def ready(self) -> int:
        return sum(1 for c in self.cards if c.job.status == "ready")


def group_cards(cards: Sequence[JobCard]) -> list[CardGroup]:
    """Cards grouped by batch, in the order each batch first appears; a batch's cards in
    batch order."""
    groups: dict[object, CardGroup] = {}
    for c in cards:
        key: object = c.job.batch_id or c.job.id
        groups.setdefault(key, CardGroup(batch_id=c.job.batch_id, cards=[])).cards.append(c)
    for group in groups.values():
        group.cards.sort(key=lambda c: c.job.batch_index)
    return list(groups.values())


def queue_entries(
    db: Session, team_id: uuid.UUID, jobs: Sequence[Job]
) -> dict[uuid.UUID, QueueEntry]:
    """The queue entries of those of `jobs` still queued, by job id (one look at the queue)."""
    queued = [j.id for j in jobs if j.status == "queued"]
    if not queued:
        return {}
    view = team_queue(db, get_settings(), team_id=team_id, now=utcnow(), only=queued)
    return {e.job.id: e for e in view.entries}


def _uuid_or_404(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound("That job") from None


def _card_response(request: Request, actor: Actor, cards: list[JobCard]) -> Response:
    return templates.TemplateResponse(request, "jobs/_cards.html", {"actor": actor, "cards": cards})


@router.get("/jobs/{job_id}/card", response_class=HTMLResponse, summary="One live job card")
def job_card(request: Request, job_id: str, actor: CurrentActor, db: SessionDep) -> Response:
    job = team_job(db, team_id=actor.team_id, job_id=_uuid_or_404(job_id))
    entry = entry_for(db, get_settings(), job, utcnow())
    return _card_response(request, actor, [card(job, account.peek(db), entry)])


@router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse, summary="Cancel a queued job")
def cancel(request: Request, job_id: str, actor: ChangingActor, db: SessionDep) -> Response:
    jid = _uuid_or_404(job_id)
    answer_refusals_with(request, lambda exc: _refused_card(request, jid, exc))
    job = cancel_job(
        db,
        job_id=jid,
        team_id=actor.team_id,
        user_id=actor.user_id,
        is_manager=actor.is_manager,
    )
    return _card_response(request, actor, [card(job)])


@router.post("/jobs/{job_id}/retry", response_class=HTMLResponse, summary="Retry as a new job")
def retry(request: Request, job_id: str, actor: ChangingActor, db: SessionDep) -> Response:
    old_id = _uuid_or_404(job_id)
    answer_refusals_with(request, lambda exc: _refused_card(request, old_id, exc))
    jobs = retry_job(db, job_id=old_id, team_id=actor.team_id, user_id=actor.user_id)
    old = team_job(db, team_id=actor.team_id, job_id=old_id)
    cards = [card(job) for job in jobs] + [card(old)]
    return _card_response(request, actor, cards)


def _refused_card(request: Request, job_id: uuid.UUID, exc: StudioError) -> Response | None:
    """A refused cancel or retry: the job's card with the reason, or the error page.

    A missing job is the 404 page and a refusal by role the 403 page, as the API answers;
    anything else (a job in the wrong state, a budget, a request no longer valid) is the
    card as it now is, with the reason above it.
    """
    actor = getattr(request.state, "actor_view", None)
    if actor is None or exc.status_code not in (402, 404, 409, 422):
        return None
    if exc.status_code == 404:
        return error_page(request, 404, NotFound("That job").message)
    with session_scope() as db:
        try:
            current = team_job(db, team_id=actor.team_id, job_id=job_id)
        except JobNotFound as gone:
            # Deleted since the refusal: the page a missing job gets.
            return error_page(request, 404, gone.message)
        return templates.TemplateResponse(
            request,
            "jobs/_cards.html",
            {"actor": actor, "cards": [card(current)], "notice": exc.message},
        )


__all__ = [
    "CardGroup",
    "GenerateForm",
    "JobCard",
    "card",
    "group_cards",
    "read_generate_form",
    "request_params",
    "router",
]
