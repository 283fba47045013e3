"""Price estimates: megapixel rounding, per-model prices, reference images, credit price."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.bfl.catalogue import (
    CostEstimate,
    billable_megapixels,
    estimate_cost,
    estimate_payload_cost,
    reference_megapixels,
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


@pytest.mark.parametrize(
    ("size", "megapixels"),
    [(None, 1), ((64, 48), 1), ((1024, 1024), 1), ((1500, 1000), 2), ((4000, 3000), 4)],
)
def test_reference_images_are_priced_by_their_megapixels(
    size: tuple[int, int] | None, megapixels: int
) -> None:
    # Rounded up like an output; an unknown size (a URL) is one megapixel; inputs above 4 MP
    # are resized to 4 MP by BFL, so they cost no more than that.
    assert reference_megapixels(size) == megapixels
    priced = estimate_cost("flux-2-pro", 1024, 1024, reference_sizes=[size])
    assert priced.usd == Decimal("0.03") + Decimal("0.015") * megapixels


def test_sizes_given_for_some_references_only() -> None:
    # Three references, the size of the first known (3 MP): 3 + 1 + 1 input megapixels.
    priced = estimate_cost("flux-2-max", 1024, 1024, 3, reference_sizes=[(2048, 1536)])
    assert priced.usd == Decimal("0.07") + Decimal("0.03") * 5
    payload = validate_request("flux-2-max", {"prompt": "x", "input_image": "aGk="})
    # No size given: the output follows the reference (3 MP), so 2 more output megapixels.
    assert estimate_payload_cost("flux-2-max", payload, reference_sizes=[(2048, 1536)]).usd == (
        Decimal("0.07") + Decimal("0.03") * 2 + Decimal("0.03") * 3
    )
    sized = validate_request(
        "flux-2-max", {"prompt": "x", "input_image": "aGk=", "width": 1024, "height": 1024}
    )
    assert estimate_payload_cost("flux-2-max", sized, reference_sizes=[(2048, 1536)]).usd == (
        Decimal("0.07") + Decimal("0.03") * 3
    )
