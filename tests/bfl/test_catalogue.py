"""The model catalogue and the one request validator: defaults, limits, actionable messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.bfl.catalogue import (
    ACCOUNT_ACTIVE_TASK_CAP,
    ASPECT_PRESETS,
    MAX_PIXELS,
    MEGAPIXEL,
    UnknownModel,
    catalogue_as_dict,
    get_model,
    list_models,
    output_size,
    validate_request,
)
from app.errors import RequestInvalid

FLUX2 = [
    "flux-2-pro",
    "flux-2-flex",
    "flux-2-max",
    "flux-2-klein-4b",
    "flux-2-klein-9b",
    "flux-2-klein-9b-preview",
]
# Spelled with escapes: the message uses the real multiplication sign.
AREA_MESSAGE = "width \u00d7 height must be at most 4 MP (4,194,304 pixels); try 2048 \u00d7 2048"
FLUX1 = ["flux-pro-1.1", "flux-pro-1.1-ultra", "flux-kontext-pro", "flux-kontext-max"]


def _errors(model: str, params: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(RequestInvalid) as caught:
        validate_request(model, params)
    return {e.field: e.message for e in caught.value.errors}


def test_every_offered_model_is_listed_once() -> None:
    names = [m.name for m in list_models()]
    assert names == FLUX2 + FLUX1
    assert {m.family for m in list_models()} == {"FLUX.2", "FLUX.1"}
    for model in list_models():
        assert model.label and model.description and model.speed and model.price


def test_unknown_model_names_the_valid_ones() -> None:
    errors = _errors("flux-3-mega", {"prompt": "x"})
    assert set(errors) == {"model"}
    assert "flux-2-pro" in errors["model"] and "flux-kontext-max" in errors["model"]
    with pytest.raises(UnknownModel, match="flux-2-flex"):
        get_model("flux-3-mega")


@pytest.mark.parametrize("model", FLUX2 + FLUX1)
def test_a_prompt_alone_is_a_valid_request_for_every_model(model: str) -> None:
    payload = validate_request(model, {"prompt": "a quiet harbour"})
    assert payload["prompt"] == "a quiet harbour"
    # Kontext's schema defaults to PNG; every other endpoint to JPEG.
    assert payload["output_format"] == ("png" if "kontext" in model else "jpeg")
    assert payload["safety_tolerance"] == 2
    width, height = output_size(model, payload)
    assert width % 16 == 0 and height % 16 == 0
    assert width * height <= MAX_PIXELS


def test_defaults_are_filled_in() -> None:
    assert validate_request("flux-2-pro", {"prompt": "x"}) == {
        "prompt": "x",
        "width": 1024,
        "height": 1024,
        "safety_tolerance": 2,
        "output_format": "jpeg",
    }
    flex = validate_request("flux-2-flex", {"prompt": "x"})
    assert flex["steps"] == 50 and flex["guidance"] == 5.0
    assert "seed" not in flex  # no default: BFL picks a random seed
    assert flex["prompt_upsampling"] is True  # BFL's default, sent so a seed reproduces


def test_form_strings_become_numbers() -> None:
    payload = validate_request(
        "flux-2-flex",
        {"prompt": "x", "width": " 768 ", "height": "512", "seed": "42", "steps": "20",
         "guidance": "3.5", "output_format": "PNG", "prompt_upsampling": "on", "webhook_url": ""},
    )  # fmt: skip
    assert payload["width"] == 768 and payload["height"] == 512 and payload["seed"] == 42
    assert payload["steps"] == 20 and payload["guidance"] == 3.5
    assert payload["output_format"] == "png" and payload["prompt_upsampling"] is True
    assert "webhook_url" not in payload


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"prompt": ""}, "prompt", "prompt is required"),
        ({"prompt": "   "}, "prompt", "prompt is required"),
        ({}, "prompt", "prompt is required"),
        ({"prompt": "x", "height": 1020}, "height", "height must be a multiple of 16; try 1024"),
        ({"prompt": "x", "width": 40}, "width", "width must be a multiple of 16; try 64"),
        ({"prompt": "x", "width": 48}, "width", "width must be at least 64"),
        ({"prompt": "x", "steps": 30}, "steps", "steps is only accepted by flux-2-flex"),
        ({"prompt": "x", "guidance": 3}, "guidance", "guidance is only accepted by flux-2-flex"),
        ({"prompt": "x", "seed": True}, "seed", "seed must be a whole number, not true/false"),
        ({"prompt": "x", "seed": "abc"}, "seed", "seed must be a whole number"),
        ({"prompt": "x", "width": "10.5"}, "width", "width must be a whole number, e.g. 1024"),
        (
            {"prompt": "x", "seed": -1},
            "seed",
            "seed must be between 0 and 4294967295 for flux-2-pro",
        ),
        (
            {"prompt": "x", "output_format": "gif"},
            "output_format",
            "output_format must be one of: jpeg, png, webp",
        ),
        (
            {"prompt": "x", "safety_tolerance": 6},
            "safety_tolerance",
            "safety_tolerance must be between 0 and 5 for flux-2-pro",
        ),
        (
            {"prompt": "x", "width": 4096, "height": 4096},
            "width",
            AREA_MESSAGE,
        ),
        (
            {"prompt": "x", "width": 3000, "height": 3000},
            "width",
            AREA_MESSAGE,
        ),
        ({"prompt": "x", "input_image_2": "aGVsbG8="}, "input_image_2",
         "input_image_2 was given without input_image; fill reference images in order"),
        ({"prompt": "x", "input_image": "http://example.com/a.png"}, "input_image",
         "input_image must be an https URL or base64-encoded image data"),
        ({"prompt": "x", "webhook_url": "ftp://x"}, "webhook_url",
         "webhook_url must be an http(s) URL, e.g. https://example.com/hook"),
        (
            {"prompt": "x", "webhook_secret": "s"},
            "webhook_secret",
            "webhook_secret needs a webhook_url",
        ),
    ],
)  # fmt: skip
def test_messages_say_how_to_fix_the_request(
    params: dict[str, Any], field: str, message: str
) -> None:
    errors = _errors("flux-2-pro", params)
    assert errors[field] == message


def test_flex_ranges() -> None:
    errors = _errors("flux-2-flex", {"prompt": "x", "steps": 0, "guidance": 12})
    assert errors == {
        "steps": "steps must be between 1 and 50 for flux-2-flex",
        "guidance": "guidance must be between 1.5 and 10 for flux-2-flex",
    }


def test_all_problems_are_reported_at_once() -> None:
    errors = _errors("flux-2-pro", {"prompt": "", "height": 1000, "steps": 3, "colour": "red"})
    assert set(errors) == {"prompt", "height", "steps", "colour"}
    assert errors["colour"].startswith("colour is not a known field; flux-2-pro accepts: prompt")


def test_reference_image_limits_per_model() -> None:
    eight = {f"input_image_{i}" if i > 1 else "input_image": "aGVsbG8=" for i in range(1, 9)}
    # No size given with references: the output follows the first (BFL's default), so width
    # and height are left out of the payload.
    payload = validate_request("flux-2-pro", {"prompt": "x", **eight})
    assert len(payload) == 3 + 8 and "width" not in payload and "height" not in payload
    errors = _errors("flux-2-klein-4b", {"prompt": "x", **eight})
    assert errors["input_image_5"] == (
        "input_image_5 is not accepted: flux-2-klein-4b takes at most 4 reference image(s)"
    )
    assert _errors("flux-pro-1.1", {"prompt": "x", "input_image": "aGVsbG8="}) == {
        "input_image": "flux-pro-1.1 does not take reference images"
    }
    assert get_model("flux-kontext-pro").max_reference_images == 4


def test_aspect_ratio_models() -> None:
    payload = validate_request("flux-pro-1.1-ultra", {"prompt": "x"})
    assert payload["aspect_ratio"] == "16:9" and payload["raw"] is False
    errors = _errors("flux-pro-1.1-ultra", {"prompt": "x", "width": 1024, "aspect_ratio": "4:1"})
    assert errors["width"] == (
        "width is not accepted by flux-pro-1.1-ultra; use aspect_ratio (e.g. 16:9) instead"
    )
    assert errors["aspect_ratio"] == "aspect_ratio must be between 21:9 and 9:21"
    assert _errors("flux-kontext-pro", {"prompt": "x", "aspect_ratio": "wide"}) == {
        "aspect_ratio": "aspect_ratio must look like width:height, e.g. 16:9"
    }
    assert "aspect_ratio" not in validate_request("flux-kontext-pro", {"prompt": "x"})


def test_flux1_pro_keeps_its_own_size_rules() -> None:
    errors = _errors("flux-pro-1.1", {"prompt": "x", "width": 1056, "height": 2048})
    assert errors == {
        "height": "height must be between 256 and 1440 for flux-pro-1.1",
    }
    assert _errors("flux-pro-1.1", {"prompt": "x", "width": 1040}) == {
        "width": "width must be a multiple of 32; try 1056"
    }


def test_safety_tolerance_bounds_are_per_model() -> None:
    assert get_model("flux-pro-1.1").field("safety_tolerance").maximum == 6  # type: ignore[union-attr]
    assert get_model("flux-kontext-max").field("safety_tolerance").maximum == 6  # type: ignore[union-attr]
    validate_request("flux-pro-1.1", {"prompt": "x", "safety_tolerance": 6})


def test_active_task_caps() -> None:
    assert ACCOUNT_ACTIVE_TASK_CAP == 24
    caps = {m.name: m.active_task_cap for m in list_models()}
    assert caps.pop("flux-kontext-max") == 6
    assert set(caps.values()) == {None}


def test_catalogue_is_json_ready() -> None:
    data = json.loads(json.dumps(catalogue_as_dict()))
    assert [m["name"] for m in data["models"]] == FLUX2 + FLUX1
    flex = next(m for m in data["models"] if m["name"] == "flux-2-flex")
    steps = next(f for f in flex["fields"] if f["name"] == "steps")
    assert (steps["default"], steps["minimum"], steps["maximum"]) == (50, 1, 50)
    assert data["limits"]["max_pixels"] == 4_194_304
    assert data["aspect_presets"]["1:1"] == [1024, 1024]
    assert flex["pricing"]["first_megapixel_usd"] == "0.05"
    assert flex["sources"]["price"].startswith("github.com/black-forest-labs/skills")


def test_aspect_presets_are_valid_sizes() -> None:
    for label, (width, height) in ASPECT_PRESETS.items():
        w_ratio, h_ratio = (int(p) for p in label.split(":"))
        assert width % 16 == 0 and height % 16 == 0
        assert width * height <= MEGAPIXEL, label  # each preset bills as one megapixel
        assert width / height == pytest.approx(w_ratio / h_ratio, rel=0.03), label
        validate_request("flux-2-pro", {"prompt": "x", "width": width, "height": height})
        validate_request("flux-pro-1.1-ultra", {"prompt": "x", "aspect_ratio": label})
