"""Recipes written into image files without re-encoding: a chunk or segment is inserted into
the stored bytes (PNG iTXt, JPEG XMP and EXIF UserComment, WebP XMP); the pixels stay as stored."""

from __future__ import annotations

import json
import struct
import zlib
from xml.sax.saxutils import escape

from app.recipes.recipe import PARAMETERS_KEY, RECIPE_KEY, Recipe

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_EXIF_HEADER = b"Exif\x00\x00"
#: A JPEG segment holds at most 65,535 bytes, its two length bytes included.
_JPEG_SEGMENT_MAX = 65_533
_NS = "https://flux-team-studio.invalid/ns/recipe/1.0/"


class NotAnImage(ValueError):
    """The bytes are not a PNG, JPEG or WebP file the studio can add a recipe to."""


def embed_recipe(data: bytes, recipe: Recipe) -> bytes:
    """`data` (a stored PNG, JPEG or WebP file) with `recipe` inserted; pixels untouched.

    Raises NotAnImage for any other kind of file.
    """
    if data.startswith(_PNG_SIGNATURE):
        return _png(data, recipe)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data, recipe)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data, recipe)
    raise NotAnImage("not a PNG, JPEG or WebP file")


# --- PNG ---------------------------------------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _itxt(keyword: str, text: str) -> bytes:
    # keyword, NUL, not compressed, method 0, no language tag, no translated keyword, UTF-8.
    body = keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")
    return _png_chunk(b"iTXt", body)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, whole chunk bytes) of every chunk; NotAnImage when a length runs past the end."""
    chunks, pos = [], len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length
        if end > len(data):
            raise NotAnImage("a PNG chunk runs past the end of the file")
        chunks.append((data[pos + 4 : pos + 8], data[pos:end]))
        pos = end
    return chunks


def _text_keyword(kind: bytes, chunk: bytes) -> bytes | None:
    if kind not in (b"tEXt", b"iTXt", b"zTXt"):
        return None
    return chunk[8:].split(b"\x00", 1)[0]


def _png(data: bytes, recipe: Recipe) -> bytes:
    ours = {RECIPE_KEY.encode(), PARAMETERS_KEY.encode()}
    added = _itxt(RECIPE_KEY, recipe.as_json()) + _itxt(PARAMETERS_KEY, recipe.parameters_text())
    out, inserted = [_PNG_SIGNATURE], False
    for kind, chunk in _png_chunks(data):
        if _text_keyword(kind, chunk) in ours:
            continue  # an older recipe of ours: replaced, not repeated
        if not inserted and kind in (b"IDAT", b"IEND"):
            # Before the pixels, so readers that stop at the first IDAT still see it.
            out.append(added)
            inserted = True
        out.append(chunk)
    return b"".join(out)


# --- JPEG --------------------------------------------------------------------------------


def xmp_packet(recipe: Recipe) -> bytes:
    """An XMP packet holding the recipe JSON and the parameters text (dc:description)."""
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        f'xmlns:flux="{_NS}">'
        f"<flux:{RECIPE_KEY.replace('-', '_')}>{escape(recipe.as_json())}"
        f"</flux:{RECIPE_KEY.replace('-', '_')}>"
        '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
        f"{escape(recipe.parameters_text())}</rdf:li></rdf:Alt></dc:description>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    )
    return packet.encode("utf-8")


def _fitting(recipe: Recipe, room: int) -> Recipe:
    """The recipe, its prompt shortened (and marked so) when the whole does not fit `room`
    bytes of one JPEG segment; prompts run to 50,000 characters, a segment to 64 KiB."""
    if len(xmp_packet(recipe)) <= room:
        return recipe
    values = dict(recipe.values)
    prompt = str(values.get("prompt", ""))
    values["prompt_truncated"] = True
    while prompt:
        prompt = prompt[: len(prompt) * 3 // 4]
        values["prompt"] = prompt
        shorter = Recipe(values)
        if len(xmp_packet(shorter)) <= room:
            return shorter
    return Recipe(values)


def _segment(marker: int, body: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body


def _user_comment_exif(text: str) -> bytes:
    """A minimal EXIF block: IFD0 pointing at an Exif IFD with one UserComment (UTF-16)."""
    comment = b"UNICODE\x00" + text.encode("utf-16-be")
    # Header (8) + IFD0 (2 + 12 + 4) + Exif IFD (2 + 12 + 4) + the comment.
    exif_ifd_at = 8 + 18
    comment_at = exif_ifd_at + 18
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", 0x8769, 4, 1, exif_ifd_at)
    tiff += struct.pack(">I", 0)
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", 0x9286, 7, len(comment), comment_at)
    tiff += struct.pack(">I", 0) + comment
    return _EXIF_HEADER + tiff


def _jpeg_segments(data: bytes) -> tuple[list[bytes], bytes]:
    """The header segments after SOI (each whole) and the rest of the file from the first
    segment that is not APPn/COM (tables, frame, scan: copied untouched)."""
    segments, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segments.append(data[pos : pos + 2 + length])
        pos += 2 + length
    return segments, data[pos:]


def _jpeg(data: bytes, recipe: Recipe) -> bytes:
    segments, rest = _jpeg_segments(data)
    kept = [s for s in segments if not (s[1] == 0xE1 and s[4:].startswith(_XMP_HEADER))]
    has_exif = any(s[1] == 0xE1 and s[4:].startswith(_EXIF_HEADER) for s in kept)
    room = _JPEG_SEGMENT_MAX - len(_XMP_HEADER)
    fitted = _fitting(recipe, room)
    added = [_segment(0xE1, _XMP_HEADER + xmp_packet(fitted))]
    if not has_exif:
        # A file with its own EXIF keeps it as it is; the XMP carries the recipe either way.
        exif = _user_comment_exif(fitted.parameters_text())
        if len(exif) <= _JPEG_SEGMENT_MAX:
            added.insert(0, _segment(0xE1, exif))
    # JFIF (APP0) must stay first; our segments follow it.
    lead = [s for s in kept if s[1] == 0xE0][:1]
    tail = [s for s in kept if s not in lead]
    return b"\xff\xd8" + b"".join(lead + added + tail) + rest


# --- WebP --------------------------------------------------------------------------------


def _riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        end = pos + 8 + length + (length & 1)
        if end > len(data):
            raise NotAnImage("a WebP chunk runs past the end of the file")
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos = end
    return chunks


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _canvas(kind: bytes, body: bytes) -> tuple[int, int, bool]:
    """(width, height, has alpha) of a simple WebP's one frame."""
    if kind == b"VP8 " and len(body) >= 10:
        width, height = struct.unpack("<HH", body[6:10])
        return width & 0x3FFF, height & 0x3FFF, False
    if kind == b"VP8L" and len(body) >= 5:
        (bits,) = struct.unpack("<I", body[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)
    raise NotAnImage("a WebP file without a frame")


def _webp(data: bytes, recipe: Recipe) -> bytes:
    chunks = [(k, b) for k, b in _riff_chunks(data) if k != b"XMP "]
    if not chunks:
        raise NotAnImage("an empty WebP file")
    if chunks[0][0] == b"VP8X":
        header = bytearray(chunks[0][1])
        header[0] |= 0x04  # the XMP flag
        chunks[0] = (b"VP8X", bytes(header))
    else:
        width, height, alpha = _canvas(*chunks[0])
        flags = 0x04 | (0x10 if alpha else 0)
        body = bytes((flags, 0, 0, 0)) + (width - 1).to_bytes(3, "little")
        chunks.insert(0, (b"VP8X", body + (height - 1).to_bytes(3, "little")))
    chunks.append((b"XMP ", xmp_packet(recipe)))
    payload = b"WEBP" + b"".join(_riff_chunk(k, b) for k, b in chunks)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def read_recipe(xmp_or_text: str | bytes) -> dict[str, object] | None:
    """The recipe JSON inside an XMP packet or a PNG text value; None when there is none."""
    text = xmp_or_text.decode("utf-8", "replace") if isinstance(xmp_or_text, bytes) else xmp_or_text
    tag = RECIPE_KEY.replace("-", "_")
    start, end = text.find(f"<flux:{tag}>"), text.find(f"</flux:{tag}>")
    if start != -1 and end > start:
        from xml.sax.saxutils import unescape

        text = unescape(text[start + len(tag) + 7 : end])
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "prompt" in value and "model" in value else None


__all__ = ["NotAnImage", "embed_recipe", "read_recipe", "xmp_packet"]
