"""The catalogue against BFL's published schemas and prices: each corrected fact, and its source."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from app.bfl.catalogue import (
    SOURCES,
    WEBHOOK_URL_MAX_LENGTH,
    CostEstimate,
    estimate_cost,
    get_model,
    list_models,
    validate_request,
)
from app.errors import RequestInvalid

#: The facts every model must say where it read: prices and limits.
_SOURCED_FACTS = {
    "price",
    "fields",
    "defaults",
    "reference_images",
    "safety_tolerance",
    "output_format",
    "webhook_url",
    "size",
}


def _errors(model: str, params: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(RequestInvalid) as caught:
        validate_request(model, params)
    return {e.field: e.message for e in caught.value.errors}


@pytest.mark.parametrize("model", [m.name for m in list_models()])
def test_every_model_names_a_source_for_its_price_and_limits(model: str) -> None:
    spec = get_model(model)
    assert set(spec.sources) >= _SOURCED_FACTS, _SOURCED_FACTS - set(spec.sources)
    for fact, key in spec.sources.items():
        assert key in SOURCES, (fact, key)
        # An address and the day it was read.
        assert "/" in SOURCES[key] or key == "none"
        assert "2026-" in SOURCES[key]
    as_data = spec.as_dict()
    assert as_data["sources"]["price"] == SOURCES[spec.sources["price"]]
    # A price read from nowhere must say it is unconfirmed.
    if spec.sources["price"] == "none":
        assert not spec.pricing.confirmed


def test_flex_is_priced_at_five_cents_per_megapixel() -> None:
    flex = get_model("flux-2-flex").pricing
    assert (flex.first_megapixel_usd, flex.additional_megapixel_usd) == (
        Decimal("0.05"),
        Decimal("0.05"),
    )
    assert flex.reference_megapixel_usd == Decimal("0.05") and flex.confirmed
    # BFL's guide: $0.05 text-to-image and $0.10 with one input image, at 1 MP.
    assert estimate_cost("flux-2-flex", 1024, 1024) == CostEstimate(Decimal("5"), Decimal("0.05"))
    assert estimate_cost("flux-2-flex", 1024, 1024, 1).usd == Decimal("0.10")


@pytest.mark.parametrize(
    ("model", "text_to_image", "one_reference"),
    [
        ("flux-2-klein-4b", "0.014", "0.015"),
        ("flux-2-klein-9b", "0.015", "0.017"),
        ("flux-2-pro", "0.03", "0.045"),
        ("flux-2-max", "0.07", "0.10"),
        ("flux-2-flex", "0.05", "0.10"),
    ],
)
def test_flux2_prices_at_one_megapixel_match_bfls_table(
    model: str, text_to_image: str, one_reference: str
) -> None:
    assert estimate_cost(model, 1024, 1024).usd == Decimal(text_to_image)
    assert estimate_cost(model, 1024, 1024, 1).usd == Decimal(one_reference)


@pytest.mark.parametrize(
    ("model", "usd"),
    [
        ("flux-pro-1.1", "0.04"),
        ("flux-pro-1.1-ultra", "0.06"),
        ("flux-kontext-pro", "0.04"),
        ("flux-kontext-max", "0.08"),
    ],
)
def test_flux1_prices_per_image(model: str, usd: str) -> None:
    spec = get_model(model)
    assert spec.pricing.flat and spec.pricing.confirmed
    assert estimate_cost(model, 1024, 1024).usd == Decimal(usd)


def test_kontext_takes_up_to_four_reference_images() -> None:
    four = {"input_image": "aGk=", "input_image_2": "aGk=", "input_image_3": "aGk=",
            "input_image_4": "aGk="}  # fmt: skip
    for model in ("flux-kontext-pro", "flux-kontext-max"):
        assert get_model(model).max_reference_images == 4
        payload = validate_request(model, {"prompt": "x", **four})
        assert payload["input_image_4"] == "aGk="
        errors = _errors(model, {"prompt": "x", **four, "input_image_5": "aGk="})
        assert errors == {
            "input_image_5": (
                f"input_image_5 is not accepted: {model} takes at most 4 reference image(s)"
            )
        }


def test_kontext_safety_range_is_wider_to_create_than_to_edit() -> None:
    assert validate_request("flux-kontext-pro", {"prompt": "x", "safety_tolerance": 6})
    assert _errors("flux-kontext-pro", {"prompt": "x", "safety_tolerance": 7}) == {
        "safety_tolerance": "safety_tolerance must be between 0 and 6 for flux-kontext-pro"
    }
    editing = {"prompt": "x", "input_image": "aGk=", "safety_tolerance": 3}
    assert _errors("flux-kontext-max", editing) == {
        "safety_tolerance": (
            "safety_tolerance must be between 0 and 2 for flux-kontext-max "
            "when editing reference images"
        )
    }
    assert validate_request("flux-kontext-max", {**editing, "safety_tolerance": 2})
    assert validate_request("flux-kontext-pro", {"prompt": "x"})["output_format"] == "png"


@pytest.mark.parametrize("model", [m.name for m in list_models()])
def test_webp_is_accepted_where_bfl_lists_it(model: str) -> None:
    # BFL's OutputFormat (shared by every endpoint we offer): jpeg, png, webp.
    spec = get_model(model).field("output_format")
    assert spec is not None and spec.choices == ("jpeg", "png", "webp")
    assert validate_request(model, {"prompt": "x", "output_format": "WebP"})["output_format"] == (
        "webp"
    )


@pytest.mark.parametrize("model", [m.name for m in list_models()])
def test_webhook_url_is_at_most_2083_characters(model: str) -> None:
    assert WEBHOOK_URL_MAX_LENGTH == 2083
    base = "https://hooks.example.com/"
    longest = base + "a" * (WEBHOOK_URL_MAX_LENGTH - len(base))
    assert validate_request(model, {"prompt": "x", "webhook_url": longest})["webhook_url"] == (
        longest
    )
    assert _errors(model, {"prompt": "x", "webhook_url": longest + "a"}) == {
        "webhook_url": "webhook_url must be at most 2083 characters"
    }


def test_prompt_upsampling_is_offered_exactly_where_bfls_schemas_take_it() -> None:
    defaults = {
        m.name: f.default for m in list_models() if (f := m.field("prompt_upsampling")) is not None
    }
    assert defaults == {
        "flux-2-flex": True,
        "flux-pro-1.1": False,
        "flux-pro-1.1-ultra": False,
        "flux-kontext-pro": False,
        "flux-kontext-max": False,
    }
    # Pro, max and klein have no such field in BFL's schemas: refused, not silently dropped.
    for model in ("flux-2-pro", "flux-2-max", "flux-2-klein-4b", "flux-2-klein-9b-preview"):
        assert _errors(model, {"prompt": "x", "prompt_upsampling": True}) == {
            "prompt_upsampling": f"prompt_upsampling is not accepted by {model}"
        }
    # An explicit false is kept, so BFL's default (on, for flex) does not apply.
    assert (
        validate_request("flux-2-flex", {"prompt": "x", "prompt_upsampling": "false"})[
            "prompt_upsampling"
        ]
        is False
    )


def test_flux2_limits_from_the_schemas() -> None:
    flux2 = [m.name for m in list_models() if m.family == "FLUX.2"]
    assert flux2 == [
        "flux-2-pro",
        "flux-2-flex",
        "flux-2-max",
        "flux-2-klein-4b",
        "flux-2-klein-9b",
        "flux-2-klein-9b-preview",
    ]
    for name in flux2:
        spec = get_model(name)
        safety = spec.field("safety_tolerance")
        assert safety is not None and (safety.minimum, safety.maximum, safety.default) == (0, 5, 2)
        width = spec.field("width")
        assert width is not None and (width.minimum, width.maximum) == (64, None)
        assert spec.max_reference_images == (4 if "klein" in name else 8)
    flex = get_model("flux-2-flex")
    guidance, steps = flex.field("guidance"), flex.field("steps")
    assert guidance is not None and (guidance.minimum, guidance.maximum, guidance.default) == (
        1.5,
        10,
        5.0,
    )
    assert steps is not None and (steps.minimum, steps.maximum, steps.default) == (1, 50, 50)


def test_the_klein_preview_endpoint_is_offered_with_its_price_unconfirmed() -> None:
    preview, released = get_model("flux-2-klein-9b-preview"), get_model("flux-2-klein-9b")
    assert preview.field_names == released.field_names
    assert not preview.pricing.confirmed and released.pricing.confirmed
    assert SOURCES[preview.sources["price"]].startswith("no public page found")
    assert any(item.startswith("price") for item in preview.unconfirmed)
