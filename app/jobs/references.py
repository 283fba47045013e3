"""Reference images: decoded once, stored once per team by content, linked to jobs in order.

Every way in (the API's JSON fields and multipart files, batches, the generate page's uploads,
a reused job's references) goes through `decode_reference`, so a picture is accepted or
refused the same way wherever it comes from. A stored reference is named by the sha256 of its
normalised bytes (`teams/<team>/references/<sha256>.<ext>`), so the same picture used by many
jobs is one object and one `ReferenceImage` row; `JobReference` rows say which job uses which,
at which position. A reference is removed only when no job points at it any more
(`purge_unused`), never by deleting a job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.db import utcnow
from app.errors import FieldError, NotFound, RequestInvalid
from app.jobs.models import Image, Job, JobReference, ReferenceImage
from app.settings import get_settings
from app.storage import ObjectMissing, get_storage
from app.units import size_text

#: Reference images are kept in storage; a job's params hold `stored:<key>` in their place,
#: and the worker swaps the bytes back in (base64) just before the POST.
STORED_PREFIX = "stored:"
#: How long a reference no job uses is kept (an upload waiting for its form), in seconds.
UNUSED_GRACE_S = 24 * 3600
#: Longest side of a reference's thumbnail, in pixels.
THUMB_SIZE = 256
#: Formats BFL takes as references: Pillow's name -> (content type, file extension).
REFERENCE_TYPES = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
}
_DATA_URL = re.compile(r"data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_ORIENTATION = 0x0112
_NOT_AN_IMAGE = (
    "is not a complete JPEG, PNG or WebP image (it may be truncated or corrupt); "
    "send the whole file again, or save it as JPEG or PNG"
)


@dataclass(frozen=True)
class DecodedReference:
    """A reference image checked and normalised: fully decoded, EXIF orientation applied,
    downscaled to the model's input limit. `data` are the bytes stored and sent to BFL."""

    data: bytes
    kind: str
    width: int
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def content_type(self) -> str:
        return REFERENCE_TYPES[self.kind][0]


def is_inline(value: Any) -> bool:
    """Whether a reference field's value is image data (base64, maybe a data URL), not a URL
    or a stored key."""
    if not isinstance(value, str) or not value.strip():
        return False
    text = value.lstrip()
    return not (text.startswith(STORED_PREFIX) or "://" in text[:16])


def is_reference_data(value: Any) -> bool:
    """Whether a reference field's value is kept out of what people and callers see: inline
    data or a stored key (an https URL is shown as it is)."""
    return not (isinstance(value, str) and value.strip().lower().startswith("https://"))


def _invalid(field: str, message: str) -> RequestInvalid:
    return RequestInvalid([FieldError(field, message)])


def reference_bytes(text: str, *, field: str, position: int) -> bytes:
    """The bytes of one base64 reference (`decode_reference`'s reading of text), for a way
    in that names its own fields (the API's `reference_images.0`). Raises `RequestInvalid`."""
    return _base64_bytes(text, field, f"reference image {position} ({_slot(position)})")


def _base64_bytes(text: str, field: str, label: str) -> bytes:
    """The bytes of base64 text, with or without a `data:image/...;base64,` prefix and line
    breaks (76-character lines from `base64` included)."""
    body = text.strip()
    prefix = _DATA_URL.match(body)
    if prefix:
        body = body[prefix.end() :]
    body = _WHITESPACE.sub("", body)
    limit = get_settings().MAX_REFERENCE_IMAGE_BYTES
    if len(body) * 3 // 4 > limit + 2:
        raise _invalid(
            field,
            f"{label} is larger than {size_text(limit)} (MAX_REFERENCE_IMAGE_BYTES); "
            "use a smaller image",
        )
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(
            field,
            f"{label} is not valid base64 image data; send the file's bytes base64-encoded "
            "(a data:image/...;base64, prefix and line breaks are fine)",
        ) from None


def fingerprint_bytes(value: bytes | str) -> bytes:
    """The bytes base64 text stands for (any prefix or line breaks dropped), or the text's own
    bytes when it is not base64: so a file and its base64 weigh the same in a fingerprint."""
    if isinstance(value, bytes):
        return value
    body = value.strip()
    prefix = _DATA_URL.match(body)
    body = _WHITESPACE.sub("", body[prefix.end() :] if prefix else body)
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return value.encode("utf-8", "surrogatepass")


def decode_reference(
    value: bytes | str, *, field: str, position: int, max_input_pixels: int
) -> DecodedReference:
    """Check and normalise one reference image, before anything is stored or paid.

    `value` is the file's bytes or base64 text; `field` names it in a refusal (`input_image_2`).
    The whole image is decoded (a truncated or corrupt file is refused), the byte limit
    (MAX_REFERENCE_IMAGE_BYTES) and the declared pixel limit (MAX_REFERENCE_IMAGE_PIXELS, read
    from the header, so a decompression bomb costs nothing) are checked first; EXIF orientation
    is applied and an image above `max_input_pixels` (the model's input limit, pixels) is
    downscaled to fit. Raises `RequestInvalid` naming `field` and saying what to change.
    """
    label = f"reference image {position} ({_slot(position)})"
    data = value if isinstance(value, bytes) else _base64_bytes(value, field, label)
    settings = get_settings()
    if not data:
        raise _invalid(field, f"{label} is empty; choose an image file")
    if len(data) > settings.MAX_REFERENCE_IMAGE_BYTES:
        limit = size_text(settings.MAX_REFERENCE_IMAGE_BYTES)
        raise _invalid(
            field,
            f"{label} is larger than {limit} (MAX_REFERENCE_IMAGE_BYTES); use a smaller one",
        )
    return _normalise(data, field, label, max_input_pixels)


def _normalise(data: bytes, field: str, label: str, max_input_pixels: int) -> DecodedReference:
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    max_pixels = get_settings().MAX_REFERENCE_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as image:
                kind = image.format or ""
                width, height = image.size
                if kind not in REFERENCE_TYPES:
                    raise _invalid(field, f"{label} must be a JPEG, PNG or WebP image")
                if width * height > max_pixels:
                    raise _invalid(field, _too_many_pixels(label, (width, height)))
                frames = int(getattr(image, "n_frames", 1) or 1)
                if frames > 1:
                    raise _invalid(
                        field, f"{label} is animated ({frames} frames); use a still image"
                    )
                image.load()
                rotated = image.getexif().get(_ORIENTATION, 1) not in (0, 1)
                picture = ImageOps.exif_transpose(image) if rotated else image
                return _fitted(picture, data, kind, rotated, max_input_pixels)
    except RequestInvalid:
        raise
    except UnidentifiedImageError:
        raise _invalid(field, f"{label} must be a JPEG, PNG or WebP image") from None
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise _invalid(field, _too_many_pixels(label, None)) from None
    except Exception:
        # Pillow reports bad data as OSError, ValueError, SyntaxError, EOFError and more.
        raise _invalid(field, f"{label} {_NOT_AN_IMAGE}") from None


def _fitted(
    picture: Any, original: bytes, kind: str, rotated: bool, max_input_pixels: int
) -> DecodedReference:
    """The picture within `max_input_pixels`, re-encoded only when it was turned or shrunk."""
    from PIL import Image as PILImage

    width, height = picture.size
    shrink = width * height > max_input_pixels
    if shrink:
        scale = (max_input_pixels / (width * height)) ** 0.5
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        picture = picture.resize(size, PILImage.Resampling.LANCZOS)
        width, height = picture.size
    if not (shrink or rotated):
        return DecodedReference(original, kind, width, height)
    buffer = io.BytesIO()
    if kind == "JPEG":
        picture.convert("RGB").save(buffer, "JPEG", quality=95)
    elif kind == "WEBP":
        picture.save(buffer, "WEBP", quality=95)
    else:
        picture.save(buffer, "PNG")
    return DecodedReference(buffer.getvalue(), kind, width, height)


def _too_many_pixels(label: str, size: tuple[int, int] | None) -> str:
    limit = get_settings().MAX_REFERENCE_IMAGE_PIXELS
    declared = f" ({size[0]} x {size[1]})" if size else ""
    return (
        f"{label} declares more than {limit:,} pixels{declared} "
        "(MAX_REFERENCE_IMAGE_PIXELS); use a smaller image"
    )


def _slot(position: int) -> str:
    return "input_image" if position == 1 else f"input_image_{position}"


def reference_keys(team_id: uuid.UUID, sha256: str, extension: str) -> tuple[str, str]:
    """Storage keys of a team's reference: (the image, its WebP thumbnail)."""
    base = f"teams/{team_id}/references/{sha256}"
    return f"{base}.{extension}", f"{base}.thumb.webp"


def _thumbnail(data: bytes) -> bytes:
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as image:
        image.draft("RGB", (THUMB_SIZE, THUMB_SIZE))
        thumb = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
        thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buffer = io.BytesIO()
        thumb.save(buffer, "WEBP", quality=80, method=2)
    return buffer.getvalue()


def store_reference(db: Session, team_id: uuid.UUID, decoded: DecodedReference) -> ReferenceImage:
    """The team's `ReferenceImage` for `decoded`, stored (image and thumbnail) if new.

    One row per team and sha256: a second upload of the same picture finds the first. The
    row's `created_at` is renewed, so a picture just used again is never purged as unused.
    Flushes.
    """
    sha = decoded.sha256
    key, thumb_key = reference_keys(team_id, sha, REFERENCE_TYPES[decoded.kind][1])
    storage = get_storage()
    if not storage.exists(key):
        storage.put(key, decoded.data, decoded.content_type)
    if not storage.exists(thumb_key):
        storage.put(thumb_key, _thumbnail(decoded.data), "image/webp")
    values = {
        "id": uuid.uuid4(),
        "team_id": team_id,
        "sha256": sha,
        "storage_key": key,
        "thumb_key": thumb_key,
        "content_type": decoded.content_type,
        "width": decoded.width,
        "height": decoded.height,
        "size_bytes": len(decoded.data),
        "created_at": utcnow(),
    }
    statement = (
        insert(ReferenceImage)
        .values(**values)
        .on_conflict_do_update(
            constraint="uq_reference_images_team_sha", set_={"created_at": values["created_at"]}
        )
        .returning(ReferenceImage.id)
    )
    ref_id = db.execute(statement).scalar_one()
    found = db.get(ReferenceImage, ref_id, populate_existing=True)
    assert found is not None
    return found


def stored_reference(
    db: Session, team_id: uuid.UUID, key: str, *, field: str, position: int, max_input_pixels: int
) -> ReferenceImage:
    """The team's reference stored under `key` (a `stored:` value without its prefix).

    A key stored before references had rows is read, checked and given its row. Raises
    `RequestInvalid` naming `field` when the team has no such image.
    """
    found = db.scalars(
        select(ReferenceImage).where(
            ReferenceImage.team_id == team_id, ReferenceImage.storage_key == key
        )
    ).first()
    if found is not None:
        return found
    if not key.startswith(f"teams/{team_id}/references/"):
        raise _invalid(field, f"{field} refers to an image that is not yours")
    try:
        data = get_storage().get(key)
    except ObjectMissing:
        raise _invalid(field, f"{field} refers to an image that is no longer stored") from None
    decoded = decode_reference(
        data, field=field, position=position, max_input_pixels=max_input_pixels
    )
    return store_reference(db, team_id, decoded)


def link_references(db: Session, jobs: Iterable[Job], refs: Sequence[ReferenceImage]) -> None:
    """Record that each of `jobs` uses `refs`, position 1 first. Flushes."""
    rows = [
        {"job_id": job.id, "position": position, "reference_id": ref.id}
        for job in jobs
        for position, ref in enumerate(refs, start=1)
    ]
    if rows:
        db.execute(insert(JobReference).values(rows))
        db.flush()


def references_of(
    db: Session, *, team_id: uuid.UUID, job_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[ReferenceImage]]:
    """Each job's references in position order (jobs without any are left out), one query."""
    if not job_ids:
        return {}
    rows = db.execute(
        select(JobReference.job_id, ReferenceImage)
        .join(ReferenceImage, ReferenceImage.id == JobReference.reference_id)
        .where(JobReference.job_id.in_(list(job_ids)), ReferenceImage.team_id == team_id)
        .order_by(JobReference.job_id, JobReference.position)
    ).all()
    found: dict[uuid.UUID, list[ReferenceImage]] = {}
    for job_id, ref in rows:
        found.setdefault(job_id, []).append(ref)
    return found


def find_reference(db: Session, team_id: uuid.UUID, sha256: str) -> ReferenceImage | None:
    """The team's reference with this sha256, or None (another team's is as good as missing)."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        return None
    return db.scalars(
        select(ReferenceImage).where(
            ReferenceImage.team_id == team_id, ReferenceImage.sha256 == sha256
        )
    ).first()


def purge_unused(db: Session, *, before: datetime) -> list[str]:
    """Delete the rows of references no job uses and nobody stored or reused since `before`.

    Returns their storage keys, for `remove_objects` after the caller commits (an object is
    never removed while a row might still point at it). A job, even a deleted one, keeps its
    references: only `JobReference` rows that are gone free one. Flushes.
    """
    used = exists().where(JobReference.reference_id == ReferenceImage.id)
    removed = db.execute(
        delete(ReferenceImage)
        .where(~used, ReferenceImage.created_at < before)
        .returning(ReferenceImage.storage_key, ReferenceImage.thumb_key)
    ).all()
    db.flush()
    return [key for row in removed for key in row]


def remove_objects(db: Session, keys: Iterable[str]) -> int:
    """Remove stored objects `purge_unused` returned, unless a row names them again (the same
    picture stored anew meanwhile). Returns how many were removed."""
    storage = get_storage()
    removed = 0
    for key in keys:
        again = db.scalar(
            select(
                exists().where(
                    (ReferenceImage.storage_key == key) | (ReferenceImage.thumb_key == key)
                )
            )
        )
        if not again:
            storage.delete(key)
            removed += 1
    return removed


def adopt_legacy(db: Session) -> int:
    """Give jobs made before references had rows their `JobReference` rows.

    Inline base64 in a job's params is decoded, stored and replaced by its `stored:` key; a
    stored key gets its row. A value that no longer decodes is left as it was (pages and the
    API never show inline data). Returns how many jobs were changed. Flushes.
    """
    from app.bfl.catalogue import MAX_REFERENCE_IMAGES, reference_field_names

    linked = exists().where(JobReference.job_id == Job.id)
    jobs = db.scalars(select(Job).where(Job.reference_count > 0, ~linked)).all()
    for job in jobs:
        params = dict(job.params or {})
        refs: list[ReferenceImage] = []
        for position, name in enumerate(reference_field_names(MAX_REFERENCE_IMAGES), start=1):
            ref = _adopt_one(db, job.team_id, params.get(name), name, position)
            if ref is not None:
                params[name] = STORED_PREFIX + ref.storage_key
                refs.append(ref)
        job.params = params
        db.flush()
        link_references(db, [job], refs)
    return len(jobs)


def _adopt_one(
    db: Session, team_id: uuid.UUID, value: Any, name: str, position: int
) -> ReferenceImage | None:
    from app.bfl.catalogue import MAX_INPUT_PIXELS

    try:
        if is_inline(value):
            decoded = decode_reference(
                str(value), field=name, position=position, max_input_pixels=MAX_INPUT_PIXELS
            )
            return store_reference(db, team_id, decoded)
        if isinstance(value, str) and value.startswith(STORED_PREFIX):
            key = value[len(STORED_PREFIX) :]
            return stored_reference(
                db, team_id, key, field=name, position=position, max_input_pixels=MAX_INPUT_PIXELS
            )
    except RequestInvalid:
        return None
    return None


@dataclass(frozen=True)
class ReferenceFile:
    """A stored reference's bytes as served: the image or its thumbnail."""

    data: bytes
    content_type: str
    filename: str


def reference_file(db: Session, team_id: uuid.UUID, sha256: str, variant: str) -> ReferenceFile:
    """The team's reference `sha256` (`variant` "original" or "thumb"). Raises `NotFound` for
    another team's, an unknown one, or one whose object is missing from storage."""
    ref = find_reference(db, team_id, sha256)
    if ref is None:
        raise NotFound("That reference image")
    thumb = variant == "thumb"
    key = ref.thumb_key if thumb else ref.storage_key
    try:
        data = get_storage().get(key)
    except ObjectMissing:
        raise NotFound("That reference image file") from None
    return ReferenceFile(
        data=data,
        content_type="image/webp" if thumb else ref.content_type,
        filename=key.rsplit("/", 1)[-1],
    )


def reference_from_result(
    db: Session, *, team_id: uuid.UUID, job_id: uuid.UUID, max_input_pixels: int
) -> ReferenceImage:
    """The team's ready image of job `job_id`, stored as a reference ("edit with this").

    Raises `NotFound` for another team's job, a deleted one or one with no stored image.
    Flushes.
    """
    image = db.scalars(
        select(Image)
        .join(Job, Job.id == Image.job_id)
        .where(Image.job_id == job_id, Job.team_id == team_id, Job.deleted_at.is_(None))
    ).first()
    if image is None:
        raise NotFound("That image")
    try:
        data = get_storage().get(image.storage_key)
    except ObjectMissing:
        raise NotFound("That image file") from None
    decoded = decode_reference(
        data, field="input_image", position=1, max_input_pixels=max_input_pixels
    )
    return store_reference(db, team_id, decoded)


def rows_for_keys(db: Session, team_id: uuid.UUID, keys: Sequence[str]) -> list[ReferenceImage]:
    """The team's references stored under `keys`, in that order; unknown keys are left out."""
    if not keys:
        return []
    rows = db.scalars(
        select(ReferenceImage).where(
            ReferenceImage.team_id == team_id, ReferenceImage.storage_key.in_(list(keys))
        )
    ).all()
    by_key = {r.storage_key: r for r in rows}
    return [by_key[k] for k in keys if k in by_key]


def purge_unused_references() -> int:
    """Remove references no job uses and nobody stored or reused for `UNUSED_GRACE_S`: rows
    first (committed), then their objects. Returns how many objects were removed."""
    from datetime import timedelta

    from app.db import session_scope

    with session_scope() as db:
        keys = purge_unused(db, before=utcnow() - timedelta(seconds=UNUSED_GRACE_S))
    with session_scope() as db:
        return remove_objects(db, keys)
