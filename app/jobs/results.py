"""Downloading a Ready task's image, storing it with its thumbnail, and marking the job ready."""

from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from app.bfl.client import BFLClient, FetchedImage, PollResult
from app.bfl.errors import ImageFetchFailed, ResultUnavailable
from app.db import session_scope, utcnow
from app.jobs import dispatch, state
from app.jobs.models import Image, Job, JobStatus
from app.jobs.outcomes import (
    MAX_UNFINISHED_POLLS,
    Outcome,
    Polled,
    fail_pending,
    human_message,
    still_pending,
)
from app.ops.logs import bind_context, clear_context, current_context
from app.settings import Settings
from app.storage import get_storage, image_keys

log = logging.getLogger(__name__)

#: Thumbnails fit in this square.
THUMB_SIZE = 512
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


def ready_time(result: PollResult, fallback: datetime) -> datetime:
    """When BFL finished: the result's end_time if it reports one, else when we saw Ready."""
    body = result.raw.get("result") if isinstance(result.raw, dict) else None
    value = body.get("end_time") if isinstance(body, dict) else None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str) and value:
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return fallback


@dataclass(frozen=True)
class StoredImage:
    storage_key: str
    thumb_key: str
    content_type: str
    width: int
    height: int
    size_bytes: int


class UnreadableImage(Exception):
    pass


def warm_up_imaging() -> None:
    """Load the image codecs a worker process needs, before its first result arrives.

    The first decode and WebP encode in a process load plug-ins and libraries (~75 ms of CPU);
    paid in the first poll, that lands exactly when a batch's first results all arrive.
    """
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", (16, 16)).save(buffer, "JPEG")
    with PILImage.open(io.BytesIO(buffer.getvalue())) as image:
        image.draft("RGB", (8, 8))
        image.load()
        image.convert("RGB").save(io.BytesIO(), "WEBP", quality=80, method=0)


def store_image(*, team_id: uuid.UUID, job_id: uuid.UUID, fetched: FetchedImage) -> StoredImage:
    """Keep the original under our own key and a WebP thumbnail beside it."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(fetched.content)) as image:
            width, height = image.size
            # JPEG can decode straight at 1/2, 1/4 or 1/8 scale: several times faster than a
            # full decode followed by a resize, and the thumbnail looks the same.
            image.draft("RGB", (THUMB_SIZE, THUMB_SIZE))
            image.load()
            thumb = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
            thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
            buffer = io.BytesIO()
            thumb.save(buffer, "WEBP", quality=80, method=0)
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as exc:
        raise UnreadableImage(f"{type(exc).__name__}: {exc}"[:200]) from exc
    extension = _EXTENSIONS.get(fetched.content_type, "bin")
    original_key, thumb_key = image_keys(team_id, job_id, extension)
    storage = get_storage()
    storage.put(original_key, fetched.content, fetched.content_type)
    storage.put(thumb_key, buffer.getvalue(), "image/webp")
    return StoredImage(
        original_key, thumb_key, fetched.content_type, width, height, len(fetched.content)
    )


def finish_ready(
    client: BFLClient,
    polled: Polled,
    result: PollResult,
    settings: Settings,
    *,
    slot_handed_on: bool = False,
) -> Outcome:
    """Download a Ready task's image, store it, and mark the job ready with its image row.

    A download or store that may work later reschedules the poll (counted, so it ends the job
    after MAX_UNFINISHED_POLLS); an expired or unreadable result ends the job.
    `slot_handed_on`: the poll gave the task's slot to the next job already.
    """
    seen_ready = utcnow()
    assert result.sample_url is not None
    ready_at = ready_time(result, seen_ready)
    # BFL is done with the task: its slot of the cap goes to the next queued job now, before
    # this image is downloaded and stored.
    released = slot_handed_on or _hand_on_slot(client, polled.id, ready_at)
    try:
        fetched = client.fetch_image(result.sample_url)
        stored = store_image(team_id=polled.team_id, job_id=polled.id, fetched=fetched)
    except ResultUnavailable:
        return fail_pending(polled.id, "result_expired", human_message("result_expired"))
    except UnreadableImage as exc:
        return fail_pending(
            polled.id, "image_unreadable", human_message("image_unreadable", str(exc))
        )
    except ImageFetchFailed as exc:
        if not exc.safe_to_retry:
            return fail_pending(polled.id, exc.code, human_message(exc.code, exc.message))
        # The link is valid for minutes: try again soon. `clean=False` keeps counting, so a
        # download that never works ends the job instead of looping.
        log.warning("download for job %s failed: %s", polled.id, exc)
        return still_pending(polled.id, settings.POLL_MIN_INTERVAL_S, None, clean=False)
    except Exception as exc:
        # Storage down, a bug: retry a few times, then give up (counted by unfinished_polls).
        log.exception("storing the image of job %s failed", polled.id)
        return _store_failed(polled, exc, settings)
    return _mark_ready(
        polled, result, stored, ready_at, slot_released=released, released_ahead=slot_handed_on
    )


def _hand_on_slot(client: BFLClient, job_id: uuid.UUID, ready_at: datetime) -> bool:
    """Release a Ready task's slot and send the next queued job in it, from this process.

    The submission's log lines name its own job; this poll's job is named again afterwards.
    Returns whether the slot is known to be released (else storing the image releases it).
    """
    context = dict(current_context())
    try:
        dispatch.submit_next(client, freed=dispatch.FreedSlot(job_id, ready_at))
        return True
    except Exception:
        log.exception("handing on the slot of job %s failed; releasing it alone", job_id)
    finally:
        clear_context()
        bind_context(**context)
    try:
        with session_scope() as db:
            # Its wake-up after commit sends the next job from another worker.
            state.release_slot(db, job_id, bfl_ready_at=ready_at)
        return True
    except Exception:
        log.exception("releasing the slot of job %s failed", job_id)
        return False


def _store_failed(polled: Polled, exc: Exception, settings: Settings) -> Outcome:
    with session_scope() as db:
        job = db.get(Job, polled.id)
        if job is not None and job.unfinished_polls >= MAX_UNFINISHED_POLLS:
            state.finish_unsuccessfully(
                db,
                polled.id,
                expected=JobStatus.PENDING,
                target=JobStatus.FAILED,
                error_code="worker_crashed",
                error_message=human_message(
                    "worker_crashed",
                    str(MAX_UNFINISHED_POLLS),
                    reason=f"storing the image failed: {type(exc).__name__}",
                ),
            )
            return Outcome.FAILED
    return still_pending(polled.id, settings.POLL_MIN_INTERVAL_S, None, clean=False)


def _mark_ready(
    polled: Polled,
    result: PollResult,
    stored: StoredImage,
    ready_at: datetime,
    *,
    slot_released: bool = True,
    released_ahead: bool = False,
) -> Outcome:
    with session_scope() as db:
        job = state.mark_ready(
            db,
            polled.id,
            result_seed=result.seed,
            bfl_ready_at=ready_at,
            slot_released=slot_released,
            released_ahead=released_ahead,
        )
        if job is None:
            # A concurrent poll (webhook plus schedule) finished it; it stored the same bytes
            # under the same keys, so there is nothing to undo.
            return Outcome.LOST_RACE
        db.add(
            Image(
                job_id=job.id,
                team_id=job.team_id,
                storage_key=stored.storage_key,
                thumb_key=stored.thumb_key,
                content_type=stored.content_type,
                width=stored.width,
                height=stored.height,
                size_bytes=stored.size_bytes,
            )
        )
    return Outcome.READY
