""" "Use" in the prompt history restores every setting: the form it opens, sent back as a
browser sends it, queues exactly the same request (model, size, steps, guidance, seeds,
upsampling, output format, safety, count and reference images)."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser

from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs import messages
from app.jobs.models import Job
from app.jobs.service import create_jobs
from tests.factories import make_person
from tests.signed_in import SignIn


class _Form(HTMLParser):
    """What a browser would submit from the page's #generate-form (enabled controls only)."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.fields: list[tuple[str, str]] = []
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id") == "generate-form":
            self.inside = True
        if not self.inside or "disabled" in a:
            return
        name = a.get("name", "")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("radio", "checkbox") and "checked" not in a:
                return
            if kind != "file":
                self.fields.append((name, a.get("value", "")))
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select is not None and "selected" in a:
            self.fields.append((self._select, a.get("value", "")))
        elif tag == "textarea" and name:
            self._textarea = name

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.fields.append((self._textarea, data))
            self._textarea = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        if tag == "form":
            self.inside = False


def _png() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 48), (10, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_use_restores_every_parameter_of_the_latest_request(
    committed_db: Session, sign_in: SignIn
) -> None:
    alice = make_person(committed_db)
    original = create_jobs(
        committed_db,
        user_id=alice.user.id,
        team_id=alice.team.id,
        model="flux-2-flex",
        params={
            "prompt": "a tin robot reading",
            "width": 768,
            "height": 512,
            "steps": 30,
            "guidance": 3.5,
            "prompt_upsampling": False,
            "output_format": "png",
            "safety_tolerance": 4,
            "seed": 1234,
        },
        count=3,
        reference_images=[_png()],
    )
    messages.discard_pending(committed_db)
    committed_db.commit()
    client = sign_in(alice)

    history = client.get("/prompts")
    assert history.status_code == 200
    use = re.search(r'href="(/\?from=[0-9a-f-]+)"', history.text)
    assert use is not None, "no Use link"
    page = client.get(use.group(1).replace("&amp;", "&"))
    assert page.status_code == 200, page.text[:300]
    form = _Form()
    form.feed(page.text)
    sent = client.post("/generate", data=dict(_multi(form.fields)))
    assert sent.status_code == 303, sent.text[:500]

    batch_ids = {j.batch_id for j in original}
    again = committed_db.scalars(
        select(Job).where(Job.team_id == alice.team.id, Job.batch_id.not_in(batch_ids))
    ).all()
    messages.discard_pending(committed_db)
    assert len(again) == 3
    again = sorted(again, key=lambda j: j.batch_index)
    first = sorted(original, key=lambda j: j.batch_index)
    assert {j.model for j in again} == {"flux-2-flex"}
    assert [j.seed for j in again] == [j.seed for j in first] == [1234, 1235, 1236]
    for new, old in zip(again, first, strict=True):
        assert new.params == old.params  # size, steps, guidance, flags, format, reference


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Form pairs as the multi-valued dict the test client sends (last checkbox value wins)."""
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out
