"""Draws the emulator's synthetic result images: deterministic, labelled, fast."""

from __future__ import annotations

import colorsys
import hashlib
import io
import random
import textwrap
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

MARK = "SYNTHETIC \u2014 BFL emulator"
#: The background is drawn at 1/this of the image's size, then scaled up.
_BACKDROP_SCALE = 4

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=16)
def _font(size: int) -> tuple[Font, bool]:
    """A font of about `size` pixels, and whether it has the dash and multiplication glyphs."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size), True
    except OSError:
        pass
    try:
        # Pillow's built-in font lacks a few glyphs, hence the ASCII fallbacks.
        return ImageFont.load_default(size=size), False
    except (ImportError, OSError):  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default(), False


def _ascii(text: str) -> str:
    return text.replace("\u2014", "-").replace("\u00d7", "x").replace("\u00b7", "|")


def _colour(rng: random.Random, lightness: float, alpha: int | None = None) -> tuple[int, ...]:
    r, g, b = colorsys.hls_to_rgb(rng.random(), lightness, 0.55 + rng.random() * 0.4)
    rgb = (int(r * 255), int(g * 255), int(b * 255))
    return rgb if alpha is None else (*rgb, alpha)


def _rng(model: str, prompt: str, seed: int) -> random.Random:
    # sha256 rather than hash(): the same inputs must give the same image in every process.
    digest = hashlib.sha256(f"{model}\x00{seed}\x00{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@lru_cache(maxsize=32)
def render_image(
    prompt: str, seed: int, model: str, width: int, height: int, output_format: str
) -> bytes:
    """A `width` x `height` JPEG, PNG or WebP; the same arguments always give the same bytes.

    Colours and shapes come from a generator seeded by model, prompt and seed, so another
    seed gives a visibly different picture. The image shows the prompt, model and seed, and
    is marked as synthetic.
    """
    rng = _rng(model, prompt, seed)
    start, end = _colour(rng, 0.35), _colour(rng, 0.7)
    mask = Image.linear_gradient("L").rotate(rng.choice((0, 45, 90, 135, 180, 270)))
    # The soft background and shapes are drawn at a quarter of the size and scaled up (a
    # sixteenth of the pixels to fill), the text at full size: the emulator shares the CPU
    # with the studio it stands in front of, and BFL's own work costs the studio nothing.
    canvas = (max(1, width // _BACKDROP_SCALE), max(1, height // _BACKDROP_SCALE))
    cw, ch = canvas
    image = Image.composite(
        Image.new("RGB", canvas, start), Image.new("RGB", canvas, end), mask.resize(canvas)
    )
    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(rng.randint(6, 12)):
        x0, y0 = rng.uniform(-0.2, 0.9) * cw, rng.uniform(-0.2, 0.9) * ch
        size = rng.uniform(0.1, 0.5) * min(cw, ch)
        box = (x0, y0, x0 + size * rng.uniform(0.6, 1.6), y0 + size)
        fill = _colour(rng, rng.uniform(0.3, 0.8), alpha=rng.randint(110, 210))
        shape = rng.choice(("ellipse", "rectangle", "triangle"))
        if shape == "ellipse":
            draw.ellipse(box, fill=fill)
        elif shape == "rectangle":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon(
                [(box[0], box[3]), ((box[0] + box[2]) / 2, box[1]), (box[2], box[3])], fill
            )

    if canvas != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(image, "RGBA")
    unit = max(8, min(width, height) // 26)
    margin = max(2, unit // 2)
    (mark_font, unicode_ok), (text_font, _) = _font(unit), _font(max(8, unit * 4 // 5))
    draw.rectangle((0, 0, width, unit + 2 * margin), fill=(0, 0, 0, 190))
    mark = MARK if unicode_ok else _ascii(MARK)
    draw.text((margin, margin), mark, font=mark_font, fill=(255, 255, 255))

    chars_per_line = max(8, int((width - 2 * margin) / (unit * 0.8 * 0.55)))
    lines = textwrap.wrap(prompt, chars_per_line, max_lines=6, placeholder=" ...") or ["(empty)"]
    caption = f"{model} \u00b7 seed {seed} \u00b7 {width}\u00d7{height}"
    lines.append(caption if unicode_ok else _ascii(caption))
    line_height = unit + margin // 2
    top = height - len(lines) * line_height - 2 * margin
    draw.rectangle((0, top, width, height), fill=(0, 0, 0, 150))
    for i, line in enumerate(lines):
        draw.text((margin, top + margin + i * line_height), line, font=text_font, fill="white")

    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, "PNG", compress_level=1)
    elif output_format == "webp":
        image.save(buffer, "WEBP", quality=85)
    else:
        image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


#: Content type and file extension of each output_format the catalogue offers.
_FORMATS = {"png": ("image/png", "png"), "webp": ("image/webp", "webp")}


def content_type_for(output_format: str) -> str:
    """The content type BFL serves an image of `output_format` with (JPEG unless PNG/WebP)."""
    return _FORMATS.get(output_format, ("image/jpeg", "jpg"))[0]


def extension_for(output_format: str) -> str:
    """The file extension of an image of `output_format`."""
    return _FORMATS.get(output_format, ("image/jpeg", "jpg"))[1]
