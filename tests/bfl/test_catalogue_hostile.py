"""Hostile values (giant numbers, control characters) are field errors, never exceptions."""

from __future__ import annotations

from typing import Any

import pytest

from app.bfl.catalogue import billable_megapixels, estimate_cost, validate_request
from app.errors import RequestInvalid

HUGE_INT = 10**400
LONG_DIGITS = "9" * 5000


def _problems(model: str, params: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(RequestInvalid) as caught:
        validate_request(model, {"prompt": "a lighthouse", **params})
    return {e.field: e.message for e in caught.value.errors}


@pytest.mark.parametrize(
    "value", [HUGE_INT, -HUGE_INT, LONG_DIGITS, "-" + LONG_DIGITS, 2**70, 1e300]
)
@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("width", "width must be a whole number between 64 and 65536"),
        ("height", "height must be a whole number between 64 and 65536"),
        ("seed", "seed must be a whole number between 0 and 4294967295"),
        ("steps", "steps must be a whole number between 1 and 50"),
    ],
)
def test_giant_whole_numbers_are_field_errors(field: str, expected: str, value: object) -> None:
    assert _problems("flux-2-flex", {field: value}) == {field: expected}


@pytest.mark.parametrize("value", [HUGE_INT, -HUGE_INT, LONG_DIGITS])
def test_giant_numbers_for_a_decimal_field_are_range_errors(value: object) -> None:
    problems = _problems("flux-2-flex", {"guidance": value})
    assert problems == {"guidance": "guidance must be between 1.5 and 10 for flux-2-flex"}


def test_ordinary_large_numbers_keep_their_specific_messages() -> None:
    assert _problems("flux-2-flex", {"steps": 51}) == {
        "steps": "steps must be between 1 and 50 for flux-2-flex"
    }
    assert "multiple of 16" in _problems("flux-2-pro", {"width": 1000})["width"]


@pytest.mark.parametrize("prompt", ["a\x00b", "bell\x07", "escape\x1b[31m", "del\x7f"])
def test_control_characters_in_the_prompt_are_refused(prompt: str) -> None:
    with pytest.raises(RequestInvalid) as caught:
        validate_request("flux-2-pro", {"prompt": prompt})
    assert [(e.field, e.message) for e in caught.value.errors] == [
        ("prompt", "prompt must not contain control characters")
    ]


def test_line_breaks_and_tabs_stay_allowed_in_prompts() -> None:
    payload = validate_request("flux-2-pro", {"prompt": "line one\nline two\r\n\tindented"})
    assert payload["prompt"] == "line one\nline two\r\n\tindented"


def test_billable_megapixels_of_absurd_sizes_do_not_overflow() -> None:
    assert billable_megapixels(10**200, 10**200) == -(-(10**400) // (1024 * 1024))
    assert billable_megapixels(1025, 1024) == 2
    assert estimate_cost("flux-2-pro", 1024, 1024).credits == 3
