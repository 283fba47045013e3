"""Synthetic images: deterministic, sized and formatted as asked, distinct per seed, fast."""

from __future__ import annotations

import io
import time
from decimal import Decimal

import httpx
from PIL import Image, ImageChops, ImageStat

from app.emulator import EmulatorServer
from app.emulator.render import render_image
from app.emulator.service import Task, _Prerenderer


def _render(seed: int, *, fmt: str = "jpeg", size: tuple[int, int] = (512, 512)) -> bytes:
    return render_image("a fox in the snow", seed, "flux-2-pro", size[0], size[1], fmt)


def test_same_inputs_give_the_same_bytes() -> None:
    first = _render(1)
    render_image.cache_clear()  # prove it is the drawing, not the cache, that repeats
    assert _render(1) == first


def test_another_seed_gives_a_visibly_different_image() -> None:
    with Image.open(io.BytesIO(_render(1))) as a, Image.open(io.BytesIO(_render(2))) as b:
        difference = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB")))
    assert sum(difference.mean) / 3 > 20  # mean channel difference out of 255


def test_prompt_and_model_change_the_image_too() -> None:
    base = render_image("a fox", 1, "flux-2-pro", 256, 256, "png")
    assert render_image("a dog", 1, "flux-2-pro", 256, 256, "png") != base
    assert render_image("a fox", 1, "flux-2-max", 256, 256, "png") != base


def test_size_and_format_match_the_request() -> None:
    for fmt, pil_format in (("jpeg", "JPEG"), ("png", "PNG")):
        for size in ((64, 64), (1360, 768), (656, 1536)):
            with Image.open(io.BytesIO(_render(5, fmt=fmt, size=size))) as picture:
                assert picture.format == pil_format
                assert picture.size == size


def test_one_megapixel_jpeg_renders_quickly() -> None:
    render_image.cache_clear()
    started = time.perf_counter()
    render_image("speed check", 11, "flux-2-pro", 1024, 1024, "jpeg")
    # Target is well under 100 ms; the bound leaves room for a loaded CI machine.
    assert time.perf_counter() - started < 0.5


def test_served_image_is_the_rendered_one(emulator: EmulatorServer, http: httpx.Client) -> None:
    body = {"prompt": "served", "seed": 8, "width": 320, "height": 240, "output_format": "png"}
    task_id = http.post("/v1/flux-2-pro", json=body).json()["id"]
    emulator.service.advance_clock(1)
    sample = http.get("/v1/get_result", params={"id": task_id}).json()["result"]["sample"]
    response = httpx.get(sample)
    assert response.headers["content-type"] == "image/png"
    assert response.content == render_image("served", 8, "flux-2-pro", 320, 240, "png")


def test_webp_is_served_as_webp(emulator: EmulatorServer, http: httpx.Client) -> None:
    # BFL lists webp among every endpoint's output formats; the emulator follows the catalogue.
    body = {"prompt": "webp", "seed": 3, "width": 320, "height": 240, "output_format": "webp"}
    task_id = http.post("/v1/flux-2-flex", json=body).json()["id"]
    emulator.service.advance_clock(120)
    sample = http.get("/v1/get_result", params={"id": task_id}).json()["result"]["sample"]
    assert sample.endswith(".webp")
    response = httpx.get(sample)
    assert response.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(response.content)) as picture:
        assert picture.format == "WEBP" and picture.size == (320, 240)


def _task(task_id: str, run_s: float) -> Task:
    now = time.time()
    return Task(
        id=task_id,
        model="flux-2-pro",
        prompt=f"drawn mid-run {task_id}",
        seed=3,
        width=128,
        height=128,
        output_format="jpeg",
        cost=Decimal("0.03"),
        created_at=now,
        ready_at=now + run_s,
        outcome="ready",
        delivery_token="t",
        base_url="http://127.0.0.1",
    )


def test_an_image_is_drawn_halfway_through_its_run_not_when_the_task_is_accepted() -> None:
    render_image.cache_clear()
    images = _Prerenderer()
    task = _task("mid", run_s=1.2)
    scheduled = time.monotonic()
    images.schedule(task)
    _, drawn = images._renders[task.id]
    assert not drawn.done()  # a burst of submissions finds the emulator not drawing
    drawn.result(timeout=30)  # drawn by the render thread, with nobody downloading
    assert time.monotonic() - scheduled >= 0.6 - 0.01
    assert images.image(task) == render_image(task.prompt, 3, "flux-2-pro", 128, 128, "jpeg")


def test_a_download_before_the_image_is_drawn_draws_it_at_once_and_keeps_it() -> None:
    images = _Prerenderer()
    task = _task("early", run_s=3600)  # the render thread would draw it in half an hour
    images.schedule(task)
    first = images.image(task)
    assert first == render_image(task.prompt, 3, "flux-2-pro", 128, 128, "jpeg")
    _, drawn = images._renders[task.id]
    assert drawn.result(timeout=0) is first  # drawn once: the render thread skips it
    assert images.image(task) is first
