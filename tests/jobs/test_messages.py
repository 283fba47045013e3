"""Every message people read when a job ends badly reads right with a realistic detail.

No message repeats itself (BFL's words restating ours are dropped), none shows "no details"
or a bare placeholder, and none promises an image that cannot come.
"""

from __future__ import annotations

import re

import pytest

from app.jobs.outcomes import MESSAGES, human_message

#: Per error code: a detail as BFL (or the pipeline) really gives it, and the extra values.
REALISTIC: dict[str, tuple[str, dict[str, str]]] = {
    "bfl_no_credits": ("", {}),
    "bfl_auth": ("", {}),
    "bfl_rejected": ("width: must be a multiple of 16.", {}),
    "bfl_server_error": ("HTTP 502", {}),
    "submission_unknown": ("the connection broke while waiting for it", {"credits": "4.5"}),
    "accepted_late": ("", {"credits": "3"}),
    "queue_deadline": ("6 hours", {"reason": "BFL was unreachable"}),
    "request_moderated": ("Derivative Works Filter", {}),
    "content_moderated": ("Derivative Works Filter, Public Figures Filter", {}),
    "bfl_error": ("BFL failed to generate the image: CUDA out of memory", {}),
    "task_not_found": ("", {}),
    "result_expired": ("", {}),
    "image_unreadable": ("UnidentifiedImageError: cannot identify image file", {}),
    "timed_out": ("15 minutes", {}),
    "reference_missing": ("", {}),
    "worker_crashed": ("3", {"reason": "a poll or download never finished"}),
    "bfl_bad_response": ("BFL's credits answer has no credits figure", {}),
}


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w']+", " ", text.lower()).split()


def _repeated_phrase(text: str, size: int = 4) -> str | None:
    words = _words(text)
    seen: set[tuple[str, ...]] = set()
    for i in range(len(words) - size + 1):
        phrase = tuple(words[i : i + size])
        if phrase in seen:
            return " ".join(phrase)
        seen.add(phrase)
    return None


def _reads_right(message: str) -> None:
    assert "{" not in message and "}" not in message, message
    assert "no details" not in message and "(not known)" not in message, message
    assert message.endswith("."), message
    for flaw in ("..", " .", " ;", " ,", "()", "( ", " )", ";.", ":."):
        assert flaw not in message, (flaw, message)
    assert _repeated_phrase(message) is None, (_repeated_phrase(message), message)
    assert "if no image appears" not in message, message


def test_every_message_has_a_realistic_example() -> None:
    assert set(REALISTIC) == set(MESSAGES)


@pytest.mark.parametrize("code", sorted(MESSAGES))
def test_each_message_reads_right_with_a_realistic_detail(code: str) -> None:
    detail, extra = REALISTIC[code]
    message = human_message(code, detail, **extra)
    _reads_right(message)
    own = detail.removeprefix("BFL failed to generate the image: ").rstrip(".")
    if own:
        assert own in message, message
    for value in extra.values():
        assert value in message, message


@pytest.mark.parametrize(
    "code", sorted(c for c, t in MESSAGES.items() if " ({detail})" in t or ": {detail}" in t)
)
def test_an_optional_detail_that_is_missing_is_left_out(code: str) -> None:
    _detail, extra = REALISTIC[code]
    for missing in ("", "no details", "  "):
        _reads_right(human_message(code, missing, **extra))


@pytest.mark.parametrize(
    ("code", "detail", "expected"),
    [
        # BFL's Error with no explanation used to read "... image (BFL failed to generate
        # the image); try again."
        (
            "bfl_error",
            "BFL failed to generate the image",
            "BFL failed to generate the image; try again.",
        ),
        (
            "bfl_error",
            "BFL failed to generate the image: CUDA out of memory",
            "BFL failed to generate the image (CUDA out of memory); try again.",
        ),
        (
            "request_moderated",
            "Derivative Works Filter",
            "BFL's moderation refused the prompt or a reference image (Derivative Works Filter); "
            "change them and try again.",
        ),
        (
            "request_moderated",
            "BFL's moderation refused the prompt or a reference image",
            "BFL's moderation refused the prompt or a reference image; change them and try again.",
        ),
        (
            "bfl_rejected",
            "width: must be a multiple of 16.",
            "BFL rejected the request: width: must be a multiple of 16. Change the settings and "
            "try again.",
        ),
        ("bfl_rejected", "", "BFL rejected the request. Change the settings and try again."),
    ],
)
def test_bfl_words_are_shown_once(code: str, detail: str, expected: str) -> None:
    assert human_message(code, detail) == expected


def test_submission_unknown_says_what_happened_and_what_it_may_have_cost() -> None:
    message = human_message(
        "submission_unknown", "the connection broke while waiting for it", credits="4.5"
    )
    assert "no usable answer came back (the connection broke while waiting" in message
    assert "about 4.5 credits" in message
    assert "not resent" in message and "Retry makes a new one" in message
    assert "No image can arrive" in message


def test_an_unknown_code_reads_as_its_detail() -> None:
    assert human_message("image_too_large", "The image is too large.") == "The image is too large."
    assert human_message("image_too_large") == "The job failed."
