"""Every limit agrees everywhere: its one source, the service's refusal, the form, the OpenAPI
document and GET /api/v1/models.

The studio is configured with non-default values for its policy limits, so an advertised
number that comes from anywhere but the settings in force fails here. Each boundary is
walked through both doors, the JSON API and the generate page: the value at the limit is
accepted, one step beyond it is refused with 422 naming the field.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from app.auth.tokens import issue_token
from app.bfl.catalogue import (
    ACCOUNT_ACTIVE_TASK_CAP,
    MAX_PIXELS,
    MAX_REFERENCE_IMAGES,
    PROMPT_MAX_CHARS,
    FieldType,
    ModelSpec,
    Sizing,
    list_models,
)
from app.jobs.dispatch import model_cap
from app.main import create_app
from app.settings import Settings, get_settings
from tests.api.conftest import sign_in
from tests.factories import make_person

#: Policy limits set to values no default has, so each advertised one must come from here.
CONFIGURED = {
    "MAX_BATCH_SIZE": "5",
    "BFL_MAX_ACTIVE_TASKS": "7",
    "MAX_REQUEST_BYTES": str(48 * 1024),
    # The longest prompt in JSON's widest escapes (12 bytes a character) must fit.
    "MAX_JOB_REQUEST_BYTES": str(768 * 1024),
    "MAX_REFERENCE_IMAGE_BYTES": "4000",
    "MAX_REFERENCE_IMAGE_PIXELS": str(40 * 30),
    "MAX_FORM_FIELDS": "40",
    "MAX_FORM_FIELD_BYTES": str(256 * 1024),
}
#: The settings each advertised limit of GET /api/v1/models reports.
SETTING_OF_LIMIT = {
    "max_batch_size": "MAX_BATCH_SIZE",
    "account_active_task_cap": "BFL_MAX_ACTIVE_TASKS",
    "max_request_bytes": "MAX_REQUEST_BYTES",
    "max_job_request_bytes": "MAX_JOB_REQUEST_BYTES",
    "max_reference_image_bytes": "MAX_REFERENCE_IMAGE_BYTES",
    "max_reference_image_pixels": "MAX_REFERENCE_IMAGE_PIXELS",
    "max_form_fields": "MAX_FORM_FIELDS",
    "max_form_field_bytes": "MAX_FORM_FIELD_BYTES",
}
MODELS = list_models()
PIXEL_MODELS = [m for m in MODELS if m.sizing is Sizing.PIXELS]


def picture(size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, (30, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_of_exactly(n_bytes: int) -> bytes:
    """A real PNG padded with a text chunk to exactly `n_bytes` bytes."""
    data = picture()
    body = b"pad\x00" + b"x" * (n_bytes - len(data) - 12 - 4)
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF)
    end = data.rindex(b"IEND") - 4
    padded = data[:end] + chunk + data[end:]
    assert len(padded) == n_bytes
    return padded


@dataclass
class Doors:
    """The two ways in, as one signed-in person of a fresh team, and what they advertise."""

    api: TestClient
    page: TestClient
    token: dict[str, str]
    csrf: dict[str, str]
    settings: Settings

    def by_api(
        self,
        model: str,
        *,
        prompt: str = "a lighthouse",
        params: dict[str, Any] | None = None,
        count: int = 1,
        references: list[bytes] | None = None,
    ) -> Response:
        body: dict[str, Any] = {"model": model, "prompt": prompt, "count": count}
        body["params"] = params or {}
        if references:
            body["reference_images"] = [base64.b64encode(r).decode() for r in references]
        return self.api.post("/api/v1/jobs", json=body, headers=self.token)

    def by_page(
        self,
        model: str,
        *,
        prompt: str = "a lighthouse",
        params: dict[str, Any] | None = None,
        count: int = 1,
        references: list[bytes] | None = None,
    ) -> Response:
        data: dict[str, str] = {"model": model, "prompt": prompt, "count": str(count)}
        data["seed_mode"] = "random"
        for name, value in (params or {}).items():
            if name == "seed":
                data["seed_mode"] = "fixed"
            data[name] = str(value)
        files = [
            ("reference_images", (f"r{i}.png", r, "image/png"))
            for i, r in enumerate(references or [])
        ]
        # Multipart, as the browser sends the form: with no file chosen, an empty file part.
        empty = ("reference_images", ("", b"", "application/octet-stream"))
        return self.page.post("/generate", data=data, files=files or [empty], headers=self.csrf)

    def accepted(self, model: str, **request: Any) -> None:
        api = self.by_api(model, **request)
        assert api.status_code == 201, api.text[:400]
        page = self.by_page(model, **request)
        assert page.status_code == 303, _page_problems(page)

    def refused(self, model: str, path: str, form_field: str, **request: Any) -> None:
        """Both doors answer 422; the API names `path`, the page shows the error at the field."""
        api = self.by_api(model, **request)
        assert api.status_code == 422, api.text[:400]
        fields = [f["field"] for f in api.json()["error"]["fields"]]
        assert path in fields, api.json()
        page = self.by_page(model, **request)
        assert page.status_code == 422, page.text[:400]
        assert f'id="err-{form_field}"' in page.text, _page_problems(page)


def _page_problems(page: Response) -> str:
    """What a page says went wrong: its field errors, or its text without the markup."""
    shown = re.findall(r'class="field-error"[^>]*>([^<]*)<', page.text)
    body = re.sub(r"<(script|style|head)\b.*?</\1>|<[^>]+>", " ", page.text, flags=re.S)
    return " | ".join(shown) or " ".join(body.split())[:600]


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for name, value in CONFIGURED.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield get_settings()
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def doors(configured: Settings, committed_db: Session) -> Iterator[Doors]:
    app = create_app()
    person = make_person(committed_db)
    issued = issue_token(committed_db, user_id=person.user.id, team_id=person.team.id, name="t")
    committed_db.commit()
    with (
        TestClient(app, base_url="https://testserver") as api,
        TestClient(app, base_url="https://testserver", follow_redirects=False) as page,
    ):
        csrf = sign_in(committed_db, page, person)
        yield Doors(api, page, {"Authorization": f"Bearer {issued.secret}"}, csrf, configured)


@pytest.fixture
def advertised(doors: Doors) -> dict[str, Any]:
    """What the studio says about its limits: /openapi.json, /api/v1/models, the page."""
    openapi = doors.api.get("/openapi.json").json()
    models = doors.api.get("/api/v1/models", headers=doors.token).json()
    html = doors.page.get("/").text
    embedded = re.search(
        r'<script type="application/json" id="catalogue-data">(.*?)</script>', html, re.S
    )
    assert embedded is not None
    body = openapi["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]
    return {
        "json": body["application/json"]["schema"]["properties"],
        "multipart": body["multipart/form-data"]["schema"]["properties"],
        "models": models,
        "page": json.loads(embedded.group(1)),
        "html": html,
    }


def _attr(html: str, element_id: str, name: str) -> str | None:
    tag = re.search(rf'<(?:input|textarea)[^>]*\bid="{element_id}"[^>]*>', html)
    assert tag is not None, element_id
    value = re.search(rf'\b{name}="([^"]*)"', tag.group(0))
    return value.group(1) if value else None


def _number(text: str | None) -> float | None:
    return None if text is None else float(text)


# --- what each source says, side by side ------------------------------------------------------


def test_the_page_and_the_api_advertise_the_same_catalogue_and_limits(
    advertised: dict[str, Any],
) -> None:
    page, api = advertised["page"], advertised["models"]
    assert page["limits"] == api["limits"]
    assert len(page["models"]) == len(api["models"])
    for shown, listed in zip(page["models"], api["models"], strict=True):
        # The API lists what its schema names; the page's script has the same and more.
        assert {key: shown[key] for key in listed} == listed


def test_studio_limits_advertised_are_the_configured_settings(
    advertised: dict[str, Any], configured: Settings
) -> None:
    limits = advertised["models"]["limits"]
    for name, setting in SETTING_OF_LIMIT.items():
        assert limits[name] == getattr(configured, setting) == int(CONFIGURED[setting]), name


def test_bfl_facts_advertised_are_the_catalogue(advertised: dict[str, Any]) -> None:
    limits = advertised["models"]["limits"]
    assert limits["prompt_max_chars"] == PROMPT_MAX_CHARS
    assert limits["max_reference_images"] == MAX_REFERENCE_IMAGES
    assert limits["max_pixels"] == MAX_PIXELS
    assert limits["bfl_account_active_task_cap"] == ACCOUNT_ACTIVE_TASK_CAP
    assert max(m.max_reference_images for m in MODELS) == MAX_REFERENCE_IMAGES
    for spec, out in zip(MODELS, advertised["models"]["models"], strict=True):
        assert out["name"] == spec.name
        assert out["max_reference_images"] == spec.max_reference_images
        references = [f for f in spec.fields if f.type is FieldType.IMAGE]
        assert len(references) == spec.max_reference_images
        assert out["editing_safety_maximum"] == spec.editing_safety_maximum
        for field in spec.fields:
            shown = next(f for f in out["fields"] if f["name"] == field.name)
            assert (shown["minimum"], shown["maximum"], shown["multiple_of"]) == (
                field.minimum,
                field.maximum,
                field.multiple_of,
            ), (spec.name, field.name)
            assert shown["max_length"] == field.max_length


def test_the_active_task_cap_is_the_setting_everywhere(
    advertised: dict[str, Any], configured: Settings
) -> None:
    # BFL's published cap is the default; the configured one is what the studio holds.
    assert Settings.model_fields["BFL_MAX_ACTIVE_TASKS"].default == ACCOUNT_ACTIVE_TASK_CAP
    limits = advertised["models"]["limits"]
    assert limits["account_active_task_cap"] == configured.BFL_MAX_ACTIVE_TASKS == 7
    for out in advertised["models"]["models"]:
        lower = out["active_task_cap"]
        expected = min(7, lower) if lower is not None else 7
        assert model_cap(out["name"], configured.BFL_MAX_ACTIVE_TASKS) == expected


def test_openapi_advertises_the_prompt_count_and_reference_limits(
    advertised: dict[str, Any], configured: Settings
) -> None:
    for media in ("json", "multipart"):
        properties = advertised[media]
        assert properties["prompt"]["maxLength"] == PROMPT_MAX_CHARS, media
        assert properties["count"]["minimum"] == 1, media
        assert properties["count"]["maximum"] == configured.MAX_BATCH_SIZE == 5, media
        assert properties["reference_images"]["maxItems"] == MAX_REFERENCE_IMAGES, media
    # Each model's own field limits are data, listed by GET /api/v1/models.
    assert "/api/v1/models" in advertised["json"]["params"]["description"]


def test_the_form_carries_the_limits_as_attributes(
    doors: Doors, advertised: dict[str, Any], configured: Settings
) -> None:
    html = advertised["html"]
    assert _attr(html, "prompt", "maxlength") == str(PROMPT_MAX_CHARS)
    assert _attr(html, "count", "min") == "1"
    assert _attr(html, "count", "max") == str(configured.MAX_BATCH_SIZE)
    for spec in MODELS:
        page = doors.page.get("/", params={"model": spec.name}).text
        shown = re.search(r"<span data-reference-limit>(\d+)</span>", page)
        assert shown is not None and int(shown.group(1)) == spec.max_reference_images
        for name in ("width", "height", "safety_tolerance", "seed", "steps", "guidance"):
            field = spec.field(name)
            if field is None:
                continue
            assert _number(_attr(page, name, "min")) == field.minimum, (spec.name, name)
            assert _number(_attr(page, name, "max")) == field.maximum, (spec.name, name)
            if field.multiple_of:
                assert _attr(page, name, "step") == str(field.multiple_of), (spec.name, name)


# --- the service's boundaries, through both doors ---------------------------------------------


def test_prompt_length_boundary(doors: Doors, configured: Settings) -> None:
    doors.accepted("flux-2-pro", prompt="a" * PROMPT_MAX_CHARS)
    doors.refused("flux-2-pro", "prompt", "prompt", prompt="a" * (PROMPT_MAX_CHARS + 1))
    # The page takes every prompt the API takes: the longest prompt in the widest UTF-8
    # (4 bytes a character) still fits one form field.
    assert 4 * PROMPT_MAX_CHARS <= configured.MAX_FORM_FIELD_BYTES
    doors.accepted("flux-2-klein-4b", prompt="\U0001f5fc" * PROMPT_MAX_CHARS)
    # A browser counts a line break as one character against maxlength and sends it as CRLF:
    # the page takes the prompt it let through.
    lines = ("a" * 99 + "\n") * (PROMPT_MAX_CHARS // 100)
    assert len(lines) == PROMPT_MAX_CHARS
    sent = doors.by_page("flux-2-klein-4b", prompt=lines.replace("\n", "\r\n"))
    assert sent.status_code == 303, _page_problems(sent)


def test_batch_size_boundary(doors: Doors, configured: Settings) -> None:
    doors.accepted("flux-2-klein-4b", count=configured.MAX_BATCH_SIZE)
    doors.refused("flux-2-klein-4b", "count", "count", count=configured.MAX_BATCH_SIZE + 1)
    doors.refused("flux-2-klein-4b", "count", "count", count=0)


@pytest.mark.parametrize("spec", MODELS, ids=[m.name for m in MODELS])
def test_reference_image_count_boundary(doors: Doors, spec: ModelSpec) -> None:
    limit = spec.max_reference_images
    if limit:
        doors.accepted(spec.name, references=[picture()] * limit)
    over = [picture()] * (limit + 1)
    if limit < MAX_REFERENCE_IMAGES:
        doors.refused(spec.name, "reference_images", "reference_images", references=over)
        return
    # One more file than any model takes: the API names the field; the page's form parser
    # stops at the file limit and its error page names it.
    api = doors.by_api(spec.name, references=over)
    assert api.status_code == 422, api.text[:300]
    assert [f["field"] for f in api.json()["error"]["fields"]] == ["reference_images"]
    page = doors.by_page(spec.name, references=over)
    assert page.status_code == 422 and "reference_images" in page.text


def _side_cases(spec: ModelSpec, name: str) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    """(accepted, refused) width/height params around `name`'s limits for `spec`."""
    field = spec.field(name)
    other = "height" if name == "width" else "width"
    other_field = spec.field(other)
    assert field is not None and other_field is not None
    low, step = int(field.minimum or 0), int(field.multiple_of or 1)
    small = int(other_field.minimum or 0)
    # Without a maximum of its own, one side is bounded by the pixel cap over the other's minimum.
    high = int(field.maximum) if field.maximum is not None else MAX_PIXELS // small // step * step
    accepted = [{name: low, other: small}, {name: high, other: small}]
    refused = [
        {name: low - step, other: small},
        {name: high + step, other: small},
        {name: low + step // 2 if step > 1 else low, other: small},
    ]
    if step == 1:
        refused.pop()
    return accepted, refused


@pytest.mark.parametrize("spec", PIXEL_MODELS, ids=[m.name for m in PIXEL_MODELS])
@pytest.mark.parametrize("name", ["width", "height"])
def test_size_boundaries(doors: Doors, spec: ModelSpec, name: str) -> None:
    accepted, refused = _side_cases(spec, name)
    for params in accepted:
        doors.accepted(spec.name, params=params)
    for params in refused:
        doors.refused(spec.name, f"params.{name}", name, params=params)


def _range_cases(spec: ModelSpec, name: str) -> tuple[list[float | int], list[float | int]]:
    field = spec.field(name)
    assert field is not None and field.minimum is not None and field.maximum is not None
    step: float | int = 1 if field.type is FieldType.INTEGER else 0.1
    low, high = field.minimum, field.maximum
    if field.type is FieldType.INTEGER:
        low, high = int(low), int(high)
    return [low, high], [round(low - step, 6), round(high + step, 6)]


RANGED = [
    (spec, name)
    for spec in MODELS
    for name in ("steps", "guidance", "safety_tolerance", "seed")
    if spec.field(name) is not None
]


@pytest.mark.parametrize(("spec", "name"), RANGED, ids=[f"{s.name}-{n}" for s, n in RANGED])
def test_field_range_boundaries(doors: Doors, spec: ModelSpec, name: str) -> None:
    accepted, refused = _range_cases(spec, name)
    for value in accepted:
        doors.accepted(spec.name, params={name: value})
    for value in refused:
        doors.refused(spec.name, f"params.{name}", name, params={name: value})


@pytest.mark.parametrize(
    "spec", [m for m in MODELS if m.editing_safety_maximum is not None], ids=lambda m: m.name
)
def test_editing_safety_boundary(doors: Doors, spec: ModelSpec) -> None:
    cap = spec.editing_safety_maximum
    assert cap is not None
    doors.accepted(spec.name, params={"safety_tolerance": cap}, references=[picture()])
    doors.refused(
        spec.name,
        "params.safety_tolerance",
        "safety_tolerance",
        params={"safety_tolerance": cap + 1},
        references=[picture()],
    )


def test_reference_image_bytes_and_pixels_boundaries(doors: Doors, configured: Settings) -> None:
    limit = configured.MAX_REFERENCE_IMAGE_BYTES
    doors.accepted("flux-2-pro", references=[png_of_exactly(limit)])
    doors.refused(
        "flux-2-pro", "reference_images", "reference_images", references=[png_of_exactly(limit + 1)]
    )
    assert configured.MAX_REFERENCE_IMAGE_PIXELS == 40 * 30
    doors.accepted("flux-2-pro", references=[picture((40, 30))])
    doors.refused(
        "flux-2-pro", "reference_images", "reference_images", references=[picture((41, 30))]
    )


def _json_body_of_exactly(n_bytes: int, body: dict[str, Any]) -> bytes:
    text = json.dumps(body).encode()
    return text[:-1] + b" " * (n_bytes - len(text)) + b"}"


def test_request_body_boundaries(doors: Doors, configured: Settings) -> None:
    json_headers = {**doors.token, "Content-Type": "application/json"}
    job = {"model": "flux-2-klein-4b", "prompt": "a lighthouse"}
    limit = configured.MAX_JOB_REQUEST_BYTES
    at = doors.api.post(
        "/api/v1/jobs", content=_json_body_of_exactly(limit, job), headers=json_headers
    )
    assert at.status_code == 201, at.text[:300]
    over = doors.api.post(
        "/api/v1/jobs", content=_json_body_of_exactly(limit + 1, job), headers=json_headers
    )
    assert over.status_code == 413 and "MAX_JOB_REQUEST_BYTES" in over.json()["error"]["message"]

    limit = configured.MAX_REQUEST_BYTES
    token = {"name": "build server"}
    at = doors.api.post(
        "/api/v1/tokens", content=_json_body_of_exactly(limit, token), headers=json_headers
    )
    assert at.status_code != 413, at.text[:300]
    over = doors.api.post(
        "/api/v1/tokens", content=_json_body_of_exactly(limit + 1, token), headers=json_headers
    )
    assert over.status_code == 413 and "MAX_REQUEST_BYTES" in over.json()["error"]["message"]


def test_form_field_count_boundary(doors: Doors, configured: Settings) -> None:
    base = {
        "model": "flux-2-klein-4b",
        "prompt": "a lighthouse",
        "count": "1",
        "seed_mode": "random",
    }
    spare = configured.MAX_FORM_FIELDS - len(base)
    at = doors.page.post(
        "/generate", data={**base, **{f"x{i}": "1" for i in range(spare)}}, headers=doors.csrf
    )
    assert at.status_code == 303, _page_problems(at)
    over = doors.page.post(
        "/generate", data={**base, **{f"x{i}": "1" for i in range(spare + 1)}}, headers=doors.csrf
    )
    assert over.status_code == 413 and "MAX_FORM_FIELDS" in over.text
