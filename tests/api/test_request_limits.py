"""Size limits on every way in: bodies, forms, files, reference images and prompts.

Each refusal is a 413 (the body is too large) or a 422 (one field is over its limit) in the
studio's error shape, naming the limit and what to change; never a 500.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.bfl.catalogue import PROMPT_MAX_CHARS
from app.jobs.models import Job
from app.settings import get_settings
from tests.api.conftest import MakeCaller, assert_error, picture, sign_in
from tests.factories import make_person

MB = 1024 * 1024


def png_declaring(width: int, height: int) -> bytes:
    """A tiny real PNG whose header claims `width` x `height` pixels (a decompression bomb)."""
    data = bytearray(picture("PNG", (8, 8)))
    # The IHDR chunk follows the 8-byte signature: length (4), type (4), then width, height.
    data[16:24] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF
    data[29:33] = struct.pack(">I", crc)
    return bytes(data)


def animated_png() -> bytes:
    buffer = io.BytesIO()
    frames = [PILImage.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _job_count(db: Session) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(Job)) or 0


def _post_files(client: TestClient, headers: dict[str, str], files: list[bytes]) -> object:
    return client.post(
        "/api/v1/jobs",
        data={"model": "flux-2-pro", "prompt": "a lighthouse"},
        files=[("reference_images", (f"r{i}.png", f, "image/png")) for i, f in enumerate(files)],
        headers=headers,
    )


# --- Bodies -----------------------------------------------------------------------------------


def test_declared_length_over_the_limit_is_413_naming_the_limit(
    client: TestClient, make_caller: MakeCaller
) -> None:
    caller = make_caller()
    body = b'{"name": "' + b"x" * (2 * MB) + b'"}'
    response = client.post(
        "/api/v1/tokens",
        content=body,
        headers={**caller.headers, "Content-Type": "application/json"},
    )
    error = assert_error(response, 413, "too_large")
    assert "1 MiB" in error["message"] and "MAX_REQUEST_BYTES" in error["message"]


def test_a_body_without_length_is_counted_as_it_streams(
    client: TestClient, make_caller: MakeCaller
) -> None:
    caller = make_caller()

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):
            yield b"y" * 64 * 1024
        yield b'"}'

    response = client.post(
        "/api/v1/tokens",
        content=chunks(),
        headers={**caller.headers, "Content-Type": "application/json"},
    )
    error = assert_error(response, 413, "too_large")
    assert "MAX_REQUEST_BYTES" in error["message"]


def test_the_job_route_has_its_own_larger_limit(
    client: TestClient, make_caller: MakeCaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "MAX_JOB_REQUEST_BYTES", 3 * MB)
    caller = make_caller()
    # 2 MiB is over the ordinary limit but within the job route's: the body is read and
    # judged on its content (an unknown model), not refused for its size.
    padding = "p" * (2 * MB)
    response = client.post(
        "/api/v1/jobs",
        json={"model": "nope", "prompt": "x", "params": {"note": padding}},
        headers=caller.headers,
    )
    assert response.status_code == 422, response.text[:300]
    too_big = client.post(
        "/api/v1/jobs",
        json={"model": "nope", "prompt": "x", "params": {"note": padding * 2}},
        headers=caller.headers,
    )
    error = assert_error(too_big, 413, "too_large")
    assert "3 MiB" in error["message"] and "MAX_JOB_REQUEST_BYTES" in error["message"]


def test_a_malformed_content_length_is_400(client: TestClient) -> None:
    response = client.post("/api/v1/tokens", content=b"{}", headers={"Content-Length": "12abc"})
    assert_error(response, 400, "bad_request")


# --- Forms ------------------------------------------------------------------------------------


def test_more_files_than_references_is_422_before_any_is_read(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    response = _post_files(client, caller.headers, [picture()] * 9)
    error = assert_error(response, 422, "invalid_request")
    assert "at most 8" in error["message"]
    assert [f["field"] for f in error["fields"]] == ["reference_images"]  # type: ignore[index]
    assert _job_count(committed_db) == 0


def test_a_reference_file_over_the_limit_is_422_naming_it(
    client: TestClient, make_caller: MakeCaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "MAX_REFERENCE_IMAGE_BYTES", 4096)
    caller = make_caller()
    large = picture("PNG", (8, 8)) + b"\0" * 8192
    response = _post_files(client, caller.headers, [picture(), large])
    error = assert_error(response, 422, "invalid_request")
    assert error["fields"][0]["field"] == "reference_images.1"  # type: ignore[index]
    assert "4 KiB" in error["message"] and "MAX_REFERENCE_IMAGE_BYTES" in error["message"]
    # The same limit holds for base64 references in JSON.
    encoded = base64.b64encode(large).decode()
    response = client.post(
        "/api/v1/jobs",
        json={"model": "flux-2-pro", "prompt": "x", "reference_images": [encoded]},
        headers=caller.headers,
    )
    error = assert_error(response, 422, "invalid_request")
    assert "MAX_REFERENCE_IMAGE_BYTES" in error["message"]


def test_too_many_form_fields_is_413(client: TestClient) -> None:
    fields = "&".join(f"f{i}=1" for i in range(get_settings().MAX_FORM_FIELDS + 5))
    response = client.post(
        "/login",
        content=("email=a%40example.com&password=x&" + fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )
    error = assert_error(response, 413, "too_large")
    assert "MAX_FORM_FIELDS" in error["message"]


def test_a_form_field_over_its_limit_is_422(
    client: TestClient, committed_db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "MAX_FORM_FIELD_BYTES", 64 * 1024)
    person = make_person(committed_db)
    csrf = sign_in(committed_db, client, person)
    response = client.post(
        "/generate",
        data={"model": "flux-2-pro", "prompt": "z" * (100 * 1024)},
        files=[("reference_images", ("", b"", "application/octet-stream"))],
        headers={**csrf, "Accept": "application/json"},
    )
    error = assert_error(response, 422, "invalid_request")
    assert "64 KiB" in error["message"] and "MAX_FORM_FIELD_BYTES" in error["message"]


def test_forms_outside_the_job_routes_take_no_files(client: TestClient) -> None:
    response = client.post(
        "/login",
        data={"email": "a@example.com", "password": "x"},
        files=[("avatar", ("a.png", picture(), "image/png"))],
        headers={"Accept": "application/json"},
    )
    error = assert_error(response, 413, "too_large")
    assert "no files" in error["message"]


# --- Reference images -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        # Beyond Pillow's own bomb threshold: Image.open raises DecompressionBombError.
        (png_declaring(20000, 20000), "MAX_REFERENCE_IMAGE_PIXELS"),
        # Below Pillow's threshold but above the studio's: refused from the header alone.
        (png_declaring(8000, 6000), "8000 x 6000"),
        (animated_png(), "animated (2 frames)"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 200, "must be a JPEG, PNG or WebP image"),
    ],
    ids=["bomb", "too-many-pixels", "animated", "corrupt"],
)
def test_unusable_reference_images_are_422_naming_the_field(
    client: TestClient,
    make_caller: MakeCaller,
    committed_db: Session,
    image: bytes,
    expected: str,
) -> None:
    caller = make_caller()
    response = _post_files(client, caller.headers, [image])
    error = assert_error(response, 422, "invalid_request")
    assert expected in error["message"], error
    assert error["fields"][0]["field"] == "reference_images"  # type: ignore[index]
    # The same through JSON (base64).
    response = client.post(
        "/api/v1/jobs",
        json={
            "model": "flux-2-pro",
            "prompt": "x",
            "reference_images": [base64.b64encode(image).decode()],
        },
        headers=caller.headers,
    )
    error = assert_error(response, 422, "invalid_request")
    assert expected in error["message"], error
    assert _job_count(committed_db) == 0


def test_a_bomb_on_the_generate_page_is_shown_on_the_field(
    client: TestClient, committed_db: Session
) -> None:
    person = make_person(committed_db)
    csrf = sign_in(committed_db, client, person)
    response = client.post(
        "/generate",
        data={"model": "flux-2-pro", "prompt": "a lighthouse", "count": "1"},
        files=[("reference_images", ("bomb.png", png_declaring(20000, 20000), "image/png"))],
        headers=csrf,
    )
    assert response.status_code == 422, response.text[:300]
    assert "MAX_REFERENCE_IMAGE_PIXELS" in response.text
    assert _job_count(committed_db) == 0


# --- Prompts ----------------------------------------------------------------------------------


def test_one_prompt_limit_for_the_api_and_the_page(
    client: TestClient, make_caller: MakeCaller, committed_db: Session
) -> None:
    caller = make_caller()
    long_prompt = "a" * (PROMPT_MAX_CHARS + 1)
    response = client.post(
        "/api/v1/jobs", json={"model": "flux-2-pro", "prompt": long_prompt}, headers=caller.headers
    )
    error = assert_error(response, 422, "invalid_request")
    assert error["fields"][0]["field"] == "prompt"  # type: ignore[index]

    person = make_person(committed_db, team=caller.team)
    csrf = sign_in(committed_db, client, person)
    page = client.post(
        "/generate",
        data={"model": "flux-2-pro", "prompt": long_prompt, "count": "1"},
        headers=csrf,
    )
    assert page.status_code == 422
    assert f"at most {PROMPT_MAX_CHARS:,}" in page.text
    assert _job_count(committed_db) == 0
    # At the limit exactly, the page queues the job.
    ok = client.post(
        "/generate",
        data={"model": "flux-2-pro", "prompt": "a" * PROMPT_MAX_CHARS, "count": "1"},
        headers=csrf,
        follow_redirects=False,
    )
    assert ok.status_code == 303, ok.text[:300]
    assert _job_count(committed_db) == 1
