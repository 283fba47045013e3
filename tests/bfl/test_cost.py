"""Price estimates: megapixel rounding, per-model prices, reference images, credit price."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.bfl.catalogue import (
    CostEstimate,
    billable_megapixels,
    estimate_cost,
    estimate_payload_cost,
    validate_request,
)


@pytest.mark.parametrize(
    ("width", "height", "megapixels"),
    [(64, 64, 1), (1024, 1024, 1), (1024, 1040, 2), (1440, 1440, 2), (2048, 2048, 4)],
)
def test_megapixels_round_up(width: int, height: int, megapixels: int) -> None:
    assert billable_megapixels(width, height) == megapixels


def test_published_prices_at_one_megapixel() -> None:
    assert estimate_cost("flux-2-pro", 1024, 1024) == CostEstimate(Decimal("3"), Decimal("0.03"))
    assert estimate_cost("flux-2-flex", 1024, 1024) == CostEstimate(Decimal("5"), Decimal("0.05"))


def test_price_scales_with_size_and_reference_images() -> None:
    assert estimate_cost("flux-2-pro", 2048, 2048).usd == Decimal("0.075")
    assert estimate_cost("flux-2-flex", 2048, 2048).usd == Decimal("0.20")
    assert estimate_cost("flux-2-pro", 1024, 1024, reference_images=2).usd == Decimal("0.06")
    prices = [estimate_cost(m, 2048, 2048).usd for m in ("flux-2-klein-4b", "flux-2-pro")]
    assert prices == sorted(prices)


def test_flat_models_ignore_size() -> None:
    small = estimate_cost("flux-kontext-max", 512, 512)
    large = estimate_cost("flux-kontext-max", 2048, 2048)
    assert small == large == CostEstimate(Decimal("8"), Decimal("0.08"))


def test_credit_price_is_a_parameter() -> None:
    estimate = estimate_cost("flux-2-pro", 1024, 1024, credit_price_usd=Decimal("0.02"))
    assert estimate == CostEstimate(Decimal("1.5"), Decimal("0.03"))
    with pytest.raises(ValueError):
        estimate_cost("flux-2-pro", 1024, 1024, credit_price_usd=Decimal("0"))


def test_payload_estimate_counts_size_and_references() -> None:
    payload = validate_request(
        "flux-2-pro",
        {"prompt": "x", "width": 1440, "height": 1440, "input_image": "aGVsbG8="},
    )
    assert estimate_payload_cost("flux-2-pro", payload).usd == Decimal("0.06")
