"""Downloads with their recipe, and recipes read back from a file someone drops on a page."""

from __future__ import annotations

import io
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from sqlalchemy.orm import Session

from app.errors import FieldError, RequestInvalid
from app.jobs.queries import image_file, team_job
from app.recipes.embed import NotAnImage, embed_recipe, read_recipe
from app.recipes.recipe import RECIPE_KEY, recipe_of
from app.storage import get_storage


@dataclass(frozen=True)
class Download:
    """A stored original with its recipe inserted: the bytes to send, type and file name."""

    data: bytes
    content_type: str
    filename: str


def with_recipe(data: bytes, job: Any) -> bytes:
    """`data` with `job`'s recipe inserted; the stored bytes unchanged if they are no image."""
    try:
        return embed_recipe(data, recipe_of(job))
    except NotAnImage:
        return data


def original_download(db: Session, *, team_id: uuid.UUID, job_id: uuid.UUID) -> Download:
    """The team's job's original with its recipe embedded.

    Embedded when served, not when stored: the stored file stays BFL's bytes, files stored
    before recipes existed get one too, and the job's URL follows PUBLIC_URL as it is now.
    Raises NotFound (another team's, deleted or not ready) and app.storage.ObjectMissing /
    StorageError when the store cannot give the file.
    """
    found = image_file(db, team_id=team_id, job_id=job_id, variant="original")
    job = team_job(db, team_id=team_id, job_id=job_id)
    data = get_storage().get(found.key)
    return Download(with_recipe(data, job), found.content_type, found.filename)


def _no_recipe(message: str) -> RequestInvalid:
    return RequestInvalid([FieldError("file", message)])


def recipe_in_file(data: bytes) -> dict[str, Any]:
    """The recipe embedded in an image file (PNG text, JPEG or WebP XMP).

    Raises RequestInvalid (field `file`) when the file is no image or carries no recipe. The
    request's size is bounded by MAX_REQUEST_BYTES before this runs.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            picture = PILImage.open(io.BytesIO(data))
            texts: list[Any] = []
            if picture.format == "PNG":
                texts.append(getattr(picture, "text", {}).get(RECIPE_KEY))
            texts.append(picture.info.get("xmp"))
    except (UnidentifiedImageError, OSError, ValueError):
        raise _no_recipe("this file is not a PNG, JPEG or WebP image") from None
    for text in texts:
        if text:
            found = read_recipe(text)
            if found is not None:
                return found
    raise _no_recipe(
        "this image carries no studio recipe; drop an image downloaded from the studio"
    )


__all__ = ["Download", "original_download", "recipe_in_file", "with_recipe"]
