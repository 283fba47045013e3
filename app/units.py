"""Quantities as people read them in messages and pages."""

from __future__ import annotations

from decimal import Decimal


def size_text(n: int) -> str:
    """Bytes as people read them: `32 MiB`, `256 KiB`, `900 bytes`."""
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= factor:
            value = n / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def credits_text(value: Decimal | None) -> str:
    """A credit amount as people read it: 3, 4.5, 0.12 (two places at most); "—" for None."""
    if value is None:
        return "—"
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"
