"""Shapes of the JSON API that more than one feature's api.py uses."""

from __future__ import annotations

from typing import Literal

from app.settings import get_settings

BflBackend = Literal["bfl", "emulator"]
BFL_BACKEND_HELP = (
    "Who makes the images: `bfl` is Black Forest Labs' API; `emulator` means no BFL key is "
    "configured and images are synthetic placeholders, not FLUX output."
)


def bfl_backend() -> BflBackend:
    """Who makes the images in this deployment: "bfl" or "emulator"."""
    return "emulator" if get_settings().bfl_emulated else "bfl"
