"""Images as one ZIP that streams: each file read, given its recipe and written out in turn,
so memory holds one image at a time whether the archive has ten images or ten thousand.

The archive ends with manifest.csv and manifest.json: every image's recipe and its cost.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Any, cast

from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.jobs.models import Image, Job
from app.recipes.embed import NotAnImage, embed_recipe
from app.recipes.recipe import Recipe, recipe_of
from app.storage import Storage, StorageError, get_storage

#: Rows read from PostgreSQL at a time while the archive's list is built.
_CHUNK = 500
_MANIFEST_COLUMNS = (
    "file",
    "job_id",
    "prompt",
    "model",
    "seed",
    "width",
    "height",
    "steps",
    "guidance",
    "prompt_upsampling",
    "safety_tolerance",
    "output_format",
    "reference_images",
    "job_url",
    "cost_credits",
    "author",
    "created_at",
)


@dataclass(frozen=True)
class Entry:
    """One image of the archive: where it is stored, its file name, recipe and cost."""

    job_id: uuid.UUID
    storage_key: str
    filename: str
    recipe: dict[str, Any]
    cost_credits: Decimal | None
    author: str
    created_at: datetime


@dataclass
class ArchivePlan:
    """What the archive will hold, read before streaming starts (no database while it streams)."""

    entries: list[Entry] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def _filename(job: Job, content_type: str, taken: set[str]) -> str:
    seed = job.result_seed if job.result_seed is not None else job.seed
    extension = {"image/png": "png", "image/webp": "webp"}.get(content_type, "jpg")
    stem = f"{job.model}-{seed if seed is not None else 'random'}-{str(job.id)[:8]}"
    name, n = f"{stem}.{extension}", 2
    while name in taken:
        name, n = f"{stem}-{n}.{extension}", n + 1
    taken.add(name)
    return name


def plan_archive(db: Session, *, team_id: uuid.UUID, job_ids: list[uuid.UUID]) -> ArchivePlan:
    """The team's stored images among `job_ids`, in the order given; the rest are listed as
    skipped with the reason (not found in this team, no image yet)."""
    plan, taken = ArchivePlan(), set[str]()
    found: dict[uuid.UUID, Entry] = {}
    for start in range(0, len(job_ids), _CHUNK):
        chunk = job_ids[start : start + _CHUNK]
        rows = db.execute(
            select(Job, Image.storage_key, Image.content_type, User.name)
            .join(Image, Image.job_id == Job.id)
            .join(User, User.id == Job.user_id)
            .where(
                Job.id.in_(chunk),
                Job.team_id == team_id,
                Image.team_id == team_id,
                Job.deleted_at.is_(None),
            )
        ).all()
        for job, key, content_type, author in rows:
            found[job.id] = Entry(
                job_id=job.id,
                storage_key=key,
                filename=_filename(job, content_type, taken),
                recipe=recipe_of(job).values,
                cost_credits=job.cost_credits,
                author=author,
                created_at=job.created_at,
            )
        db.expunge_all()
    for job_id in job_ids:
        entry = found.get(job_id)
        if entry is None:
            plan.skipped.append({"job_id": str(job_id), "reason": "no stored image in this team"})
        else:
            plan.entries.append(entry)
    return plan


class _Chunks:
    """A write-only, unseekable file that hands what was written to the streaming loop."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._offset = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _manifest_row(entry: Entry) -> dict[str, Any]:
    row: dict[str, Any] = {name: entry.recipe.get(name) for name in _MANIFEST_COLUMNS}
    row["file"] = entry.filename
    row["reference_images"] = " ".join(
        r.get("sha256") or r.get("url", "") for r in entry.recipe.get("reference_images") or []
    )
    row["cost_credits"] = None if entry.cost_credits is None else str(entry.cost_credits)
    row["author"] = entry.author
    row["created_at"] = entry.created_at.isoformat()
    return row


def _manifests(plan: ArchivePlan, missing: list[dict[str, str]]) -> tuple[bytes, bytes]:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(_MANIFEST_COLUMNS))
    writer.writeheader()
    items = []
    for entry in plan.entries:
        if any(m["job_id"] == str(entry.job_id) for m in missing):
            continue
        writer.writerow(_manifest_row(entry))
        cost = None if entry.cost_credits is None else str(entry.cost_credits)
        items.append({"file": entry.filename, "cost_credits": cost, "recipe": entry.recipe})
    document = {"images": items, "skipped": plan.skipped + missing}
    return text.getvalue().encode("utf-8"), json.dumps(document, indent=2).encode("utf-8")


def stream_archive(plan: ArchivePlan, storage: Storage) -> Iterator[bytes]:
    """The ZIP's bytes, piece by piece: images stored as they are (already compressed) with
    their recipe inserted, then the two manifests. A file missing from storage is skipped
    and named in manifest.json."""
    sink = _Chunks()
    missing: list[dict[str, str]] = []
    with zipfile.ZipFile(
        cast(IO[bytes], sink), "w", compression=zipfile.ZIP_STORED, allowZip64=True
    ) as archive:
        for entry in plan.entries:
            try:
                data = storage.get(entry.storage_key)
            except (StorageError, OSError):
                missing.append({"job_id": str(entry.job_id), "reason": "file missing from storage"})
                continue
            with contextlib.suppress(NotAnImage):
                data = embed_recipe(data, Recipe(entry.recipe))
            info = zipfile.ZipInfo(entry.filename, date_time=entry.created_at.timetuple()[:6])
            archive.writestr(info, data)
            del data
            yield sink.take()
        csv_bytes, json_bytes = _manifests(plan, missing)
        for name, content in (("manifest.csv", csv_bytes), ("manifest.json", json_bytes)):
            archive.writestr(name, content, compress_type=zipfile.ZIP_DEFLATED)
        yield sink.take()
    yield sink.take()


def zip_response(plan: ArchivePlan) -> StreamingResponse:
    """The archive streamed as an attachment named after the moment it was made."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        stream_archive(plan, get_storage()),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="flux-studio-{stamp}.zip"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


__all__ = ["ArchivePlan", "Entry", "plan_archive", "stream_archive", "zip_response"]
