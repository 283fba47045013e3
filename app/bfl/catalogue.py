"""The model catalogue: every BFL model we offer, its request fields, limits and prices.

This is the one place for facts about BFL's models. Anything BFL has not published as a
guarantee is still data here (marked in `unconfirmed`), so correcting it is a one-line change.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_UP, Decimal
from enum import StrEnum
from typing import Any

from app.bfl.errors import FieldError, RequestInvalid

__all__ = [
    "ACCOUNT_ACTIVE_TASK_CAP",
    "ASPECT_PRESETS",
    "DEFAULT_CREDIT_PRICE_USD",
    "MAX_PIXELS",
    "MEGAPIXEL",
    "CostEstimate",
    "FieldError",
    "FieldSpec",
    "FieldType",
    "ModelSpec",
    "Pricing",
    "RequestInvalid",
    "Sizing",
    "UnknownModel",
    "billable_megapixels",
    "catalogue_as_dict",
    "count_reference_images",
    "estimate_cost",
    "estimate_payload_cost",
    "get_model",
    "list_models",
    "model_names",
    "output_size",
    "reference_field_names",
    "validate_request",
]

#: One billing megapixel. BFL's 4 MP cap is 4 x 2**20 px, so their "megapixel" is 1024 x 1024.
MEGAPIXEL = 1024 * 1024
#: Largest output in pixels for size-by-pixels models (unconfirmed exact cap: 2048 x 2048).
MAX_PIXELS = 4 * MEGAPIXEL
#: Active tasks (submitted, not finished) BFL allows per account unless a model says otherwise.
ACCOUNT_ACTIVE_TASK_CAP = 24
#: US dollars per BFL credit (unconfirmed); the app passes its own setting.
DEFAULT_CREDIT_PRICE_USD = Decimal("0.01")
#: BFL's own domain: its API hosts (global, EU, US) and regional polling hosts live under it.
BFL_DOMAIN = "bfl.ai"
#: How many reference images a request may carry at most, across all models.
_REFERENCE_FIELD_LIMIT = 8


class FieldType(StrEnum):
    """How a request field is parsed and checked."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    CHOICE = "choice"
    IMAGE = "image"
    URL = "url"
    ASPECT_RATIO = "aspect_ratio"


class Sizing(StrEnum):
    """How a model is told the output size."""

    PIXELS = "pixels"  # width and height fields
    ASPECT_RATIO = "aspect_ratio"  # an aspect_ratio field; the model picks the pixel count


@dataclass(frozen=True)
class FieldSpec:
    """One request field a model accepts."""

    name: str
    type: FieldType
    label: str
    help: str = ""
    default: Any = None  # None: not sent unless the caller gives it
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int | None = None
    choices: tuple[str, ...] = ()
    #: Plumbing fields (webhooks, reference images) the generation form does not show.
    internal: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type.value,
            "label": self.label,
            "help": self.help,
            "default": self.default,
            "required": self.required,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "multiple_of": self.multiple_of,
            "choices": list(self.choices) or None,
            "internal": self.internal,
        }


@dataclass(frozen=True)
class Pricing:
    """How a model is charged, in US dollars.

    Size-priced models: `first_megapixel_usd` for the first started megapixel of output,
    `additional_megapixel_usd` for each further one, `reference_megapixel_usd` per megapixel of
    each reference image. Flat models charge `first_megapixel_usd` per image whatever the size.
    """

    first_megapixel_usd: Decimal
    additional_megapixel_usd: Decimal = Decimal("0")
    reference_megapixel_usd: Decimal = Decimal("0")
    flat: bool = False
    confirmed: bool = False
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "first_megapixel_usd": str(self.first_megapixel_usd),
            "additional_megapixel_usd": str(self.additional_megapixel_usd),
            "reference_megapixel_usd": str(self.reference_megapixel_usd),
            "flat": self.flat,
            "confirmed": self.confirmed,
            "note": self.note,
        }


@dataclass(frozen=True)
class ModelSpec:
    """Everything the studio knows about one BFL model endpoint (`POST /v1/<name>`)."""

    name: str
    label: str
    family: str
    description: str
    speed: str
    quality: str
    price: str
    sizing: Sizing
    fields: tuple[FieldSpec, ...]
    max_reference_images: int
    pricing: Pricing
    #: Active-task cap for this model; None means only the account cap applies.
    active_task_cap: int | None = None
    #: Output size class of aspect-ratio models (ignored for size-by-pixels models).
    nominal_megapixels: int = 1
    unconfirmed: tuple[str, ...] = ()

    def field(self, name: str) -> FieldSpec | None:
        """The spec of field `name`, or None when this model does not accept it."""
        return next((f for f in self.fields if f.name == name), None)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "family": self.family,
            "description": self.description,
            "speed": self.speed,
            "quality": self.quality,
            "price": self.price,
            "sizing": self.sizing.value,
            "fields": [f.as_dict() for f in self.fields],
            "max_reference_images": self.max_reference_images,
            "active_task_cap": self.active_task_cap,
            "nominal_megapixels": self.nominal_megapixels,
            "pricing": self.pricing.as_dict(),
            "unconfirmed": list(self.unconfirmed),
        }


@dataclass(frozen=True)
class CostEstimate:
    """A price shown before submitting and reserved against budgets; BFL's `cost` is the truth."""

    credits: Decimal
    usd: Decimal


class UnknownModel(LookupError):
    """A model name that is not in the catalogue."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")


# --- field definitions -------------------------------------------------------------------

_PROMPT = FieldSpec(
    "prompt", FieldType.STRING, "Prompt", "What the image should show.", required=True
)
_SEED = FieldSpec(
    "seed",
    FieldType.INTEGER,
    "Seed",
    "Same seed and same inputs reproduce the image; leave empty for a random one.",
    minimum=0,
    maximum=2**32 - 1,  # unconfirmed upper bound; kept conservative
)
_OUTPUT_FORMAT = FieldSpec(
    "output_format",
    FieldType.CHOICE,
    "Format",
    "JPEG is smaller; PNG is lossless.",
    default="jpeg",
    choices=("jpeg", "png"),
)
_WEBHOOK_URL = FieldSpec(
    "webhook_url", FieldType.URL, "Webhook URL", "Called when the task finishes.", internal=True
)
_WEBHOOK_SECRET = FieldSpec(
    "webhook_secret",
    FieldType.STRING,
    "Webhook secret",
    "Lets the receiver check the call is genuine.",
    internal=True,
)


def _safety(maximum: int) -> FieldSpec:
    return FieldSpec(
        "safety_tolerance",
        FieldType.INTEGER,
        "Safety tolerance",
        f"0 is strictest, {maximum} most permissive.",
        default=2,
        minimum=0,
        maximum=maximum,
    )


def _dimension(
    name: str, label: str, *, default: int, minimum: int, maximum: int | None, step: int
) -> FieldSpec:
    return FieldSpec(
        name,
        FieldType.INTEGER,
        label,
        f"Pixels, a multiple of {step}.",
        default=default,
        minimum=minimum,
        maximum=maximum,
        multiple_of=step,
    )


def _upsampling(default: bool | None) -> FieldSpec:
    return FieldSpec(
        "prompt_upsampling",
        FieldType.BOOLEAN,
        "Prompt upsampling",
        "Let BFL expand the prompt; results vary more.",
        default=default,
    )


def _aspect_ratio(default: str | None) -> FieldSpec:
    return FieldSpec(
        "aspect_ratio",
        FieldType.ASPECT_RATIO,
        "Aspect ratio",
        "Width:height between 21:9 and 9:21, e.g. 16:9.",
        default=default,
        minimum=9 / 21,
        maximum=21 / 9,
    )


def reference_field_names(count: int) -> tuple[str, ...]:
    """Names of the first `count` reference-image fields: input_image, input_image_2, ..."""
    return tuple("input_image" if i == 1 else f"input_image_{i}" for i in range(1, count + 1))


def _references(count: int) -> tuple[FieldSpec, ...]:
    return tuple(
        FieldSpec(
            name,
            FieldType.IMAGE,
            f"Reference image {i}",
            "An https URL or base64-encoded image.",
            internal=True,
        )
        for i, name in enumerate(reference_field_names(count), start=1)
    )


def _flux2_fields(*, extra: tuple[FieldSpec, ...] = (), references: int) -> tuple[FieldSpec, ...]:
    return (
        _PROMPT,
        _dimension("width", "Width", default=1024, minimum=64, maximum=None, step=16),
        _dimension("height", "Height", default=1024, minimum=64, maximum=None, step=16),
        _SEED,
        # One BFL reference says 0-5, the product page 0-6: 5 is accepted by both readings.
        _safety(5),
        _OUTPUT_FORMAT,
        *extra,
        *_references(references),
        _WEBHOOK_URL,
        _WEBHOOK_SECRET,
    )


_FLUX2_UNCONFIRMED = (
    "exact 4 MP pixel cap",
    "safety_tolerance upper bound (5 kept; product page says 6)",
    "maximum number of reference images",
    "price beyond the first megapixel and of reference images",
)

_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="flux-2-pro",
        label="FLUX.2 [pro]",
        family="FLUX.2",
        description="Production default: fast, sharp and affordable.",
        speed="fast (under 10 s)",
        quality="high",
        price="low",
        sizing=Sizing.PIXELS,
        fields=_flux2_fields(references=8),
        max_reference_images=8,
        pricing=Pricing(
            Decimal("0.03"),
            Decimal("0.015"),
            Decimal("0.015"),
            confirmed=False,
            note="$0.03 at 1 MP is published; extra and reference megapixels are estimates.",
        ),
        unconfirmed=_FLUX2_UNCONFIRMED,
    ),
    ModelSpec(
        name="flux-2-flex",
        label="FLUX.2 [flex]",
        family="FLUX.2",
        description="Finest detail and typography, with steps and guidance controls.",
        speed="slower",
        quality="highest detail",
        price="medium",
        sizing=Sizing.PIXELS,
        fields=_flux2_fields(
            references=8,
            extra=(
                FieldSpec(
                    "steps",
                    FieldType.INTEGER,
                    "Steps",
                    "More steps: more detail, slower.",
                    default=50,
                    minimum=1,
                    maximum=50,
                ),
                FieldSpec(
                    "guidance",
                    FieldType.NUMBER,
                    "Guidance",
                    "How closely to follow the prompt.",
                    default=4.5,
                    minimum=1.5,
                    maximum=10,
                ),
                _upsampling(None),
            ),
        ),
        max_reference_images=8,
        pricing=Pricing(
            Decimal("0.06"),
            Decimal("0.06"),
            Decimal("0.06"),
            confirmed=False,
            note="$0.06 per megapixel at 1 MP is published; input megapixels are an estimate.",
        ),
        unconfirmed=(*_FLUX2_UNCONFIRMED, "prompt_upsampling and its default"),
    ),
    ModelSpec(
        name="flux-2-max",
        label="FLUX.2 [max]",
        family="FLUX.2",
        description="Highest quality of the family, for hero images.",
        speed="moderate",
        quality="highest",
        price="high",
        sizing=Sizing.PIXELS,
        fields=_flux2_fields(references=8),
        max_reference_images=8,
        pricing=Pricing(
            Decimal("0.07"),
            Decimal("0.03"),
            Decimal("0.03"),
            note="Estimate.",
        ),
        unconfirmed=(*_FLUX2_UNCONFIRMED, "grounding search", "price"),
    ),
    ModelSpec(
        name="flux-2-klein-4b",
        label="FLUX.2 [klein] 4B",
        family="FLUX.2",
        description="Fastest and cheapest, for drafts and previews.",
        speed="fastest",
        quality="good",
        price="lowest",
        sizing=Sizing.PIXELS,
        fields=_flux2_fields(references=4),
        max_reference_images=4,
        pricing=Pricing(
            Decimal("0.014"),
            Decimal("0.001"),
            Decimal("0.001"),
            note="Estimate.",
        ),
        unconfirmed=(*_FLUX2_UNCONFIRMED, "price"),
    ),
    ModelSpec(
        name="flux-2-klein-9b",
        label="FLUX.2 [klein] 9B",
        family="FLUX.2",
        description="Very fast and cheap, a notch above klein 4B.",
        speed="very fast",
        quality="good+",
        price="very low",
        sizing=Sizing.PIXELS,
        fields=_flux2_fields(references=4),
        max_reference_images=4,
        pricing=Pricing(
            Decimal("0.015"),
            Decimal("0.002"),
            Decimal("0.002"),
            note="Estimate.",
        ),
        unconfirmed=(*_FLUX2_UNCONFIRMED, "price"),
    ),
    ModelSpec(
        name="flux-pro-1.1",
        label="FLUX1.1 [pro]",
        family="FLUX.1",
        description="Previous generation; reliable text-to-image.",
        speed="fast",
        quality="high",
        price="low",
        sizing=Sizing.PIXELS,
        fields=(
            _PROMPT,
            _dimension("width", "Width", default=1024, minimum=256, maximum=1440, step=32),
            _dimension("height", "Height", default=768, minimum=256, maximum=1440, step=32),
            _upsampling(False),
            _SEED,
            _safety(6),
            _OUTPUT_FORMAT,
            _WEBHOOK_URL,
            _WEBHOOK_SECRET,
        ),
        max_reference_images=0,
        pricing=Pricing(Decimal("0.04"), flat=True, note="Flat per image; estimate."),
        unconfirmed=("price",),
    ),
    ModelSpec(
        name="flux-pro-1.1-ultra",
        label="FLUX1.1 [pro] Ultra",
        family="FLUX.1",
        description="Previous generation at about 4 MP; choose an aspect ratio.",
        speed="fast",
        quality="high, large",
        price="medium",
        sizing=Sizing.ASPECT_RATIO,
        fields=(
            _PROMPT,
            _aspect_ratio("16:9"),
            FieldSpec(
                "raw",
                FieldType.BOOLEAN,
                "Raw",
                "Less processed, more natural-looking images.",
                default=False,
            ),
            _upsampling(False),
            _SEED,
            _safety(6),
            _OUTPUT_FORMAT,
            _WEBHOOK_URL,
            _WEBHOOK_SECRET,
        ),
        max_reference_images=0,
        nominal_megapixels=4,
        pricing=Pricing(Decimal("0.06"), flat=True, note="Flat per image; estimate."),
        unconfirmed=("price",),
    ),
    ModelSpec(
        name="flux-kontext-pro",
        label="FLUX.1 Kontext [pro]",
        family="FLUX.1",
        description="Edit an image with words, or create one; one reference image.",
        speed="fast",
        quality="high",
        price="low",
        sizing=Sizing.ASPECT_RATIO,
        fields=(
            _PROMPT,
            *_references(1),
            _aspect_ratio(None),
            _upsampling(False),
            _SEED,
            # Kept at 2: the editing tolerance BFL allows is lower than for text-to-image.
            _safety(2),
            _OUTPUT_FORMAT,
            _WEBHOOK_URL,
            _WEBHOOK_SECRET,
        ),
        max_reference_images=1,
        pricing=Pricing(Decimal("0.04"), flat=True, note="Flat per image; estimate."),
        unconfirmed=("price", "safety_tolerance upper bound"),
    ),
    ModelSpec(
        name="flux-kontext-max",
        label="FLUX.1 Kontext [max]",
        family="FLUX.1",
        description="Best-quality Kontext editing, with a small concurrency limit.",
        speed="moderate",
        quality="highest (FLUX.1)",
        price="high",
        sizing=Sizing.ASPECT_RATIO,
        fields=(
            _PROMPT,
            *_references(1),
            _aspect_ratio(None),
            _upsampling(False),
            _SEED,
            _safety(2),
            _OUTPUT_FORMAT,
            _WEBHOOK_URL,
            _WEBHOOK_SECRET,
        ),
        max_reference_images=1,
        active_task_cap=6,
        pricing=Pricing(Decimal("0.08"), flat=True, note="Flat per image; estimate."),
        unconfirmed=("price", "safety_tolerance upper bound"),
    ),
)

_BY_NAME: dict[str, ModelSpec] = {m.name: m for m in _MODELS}

#: Ready-made sizes near 1 MP, all multiples of 16 and within one billing megapixel.
#: The keys are also valid `aspect_ratio` values for aspect-ratio models.
ASPECT_PRESETS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "4:3": (1184, 880),
    "3:4": (880, 1184),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
    "16:9": (1360, 768),
    "9:16": (768, 1360),
    "21:9": (1536, 656),
    "9:21": (656, 1536),
}


# --- look-ups ----------------------------------------------------------------------------


def list_models() -> list[ModelSpec]:
    """All models, in the order the UI offers them (FLUX.2 first, production default first)."""
    return list(_MODELS)


def model_names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def get_model(name: str) -> ModelSpec:
    """The model called `name`; raises `UnknownModel` (a LookupError) otherwise."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise UnknownModel(str(name)) from None


def catalogue_as_dict(credit_price_usd: Decimal = DEFAULT_CREDIT_PRICE_USD) -> dict[str, Any]:
    """The whole catalogue as JSON-ready data for the API and the generation form's script."""
    return {
        "models": [m.as_dict() for m in _MODELS],
        "aspect_presets": {k: list(v) for k, v in ASPECT_PRESETS.items()},
        "limits": {
            "max_pixels": MAX_PIXELS,
            "megapixel": MEGAPIXEL,
            "account_active_task_cap": ACCOUNT_ACTIVE_TASK_CAP,
        },
        "credit_price_usd": str(credit_price_usd),
    }


# --- sizes and prices --------------------------------------------------------------------


def billable_megapixels(width: int, height: int) -> int:
    """Megapixels charged for an image: width x height divided by 1024 x 1024, rounded UP.

    So 1024 x 1024 is 1, 1440 x 1440 is 2 and 2048 x 2048 is 4; anything smaller than one
    megapixel counts as one. Rounding up keeps budget reservations on the safe side.
    """
    # Integer ceiling division: exact for any size, where a float division could overflow.
    return max(1, -(-max(0, width) * max(0, height) // MEGAPIXEL))


def _parse_ratio(value: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*(\d{1,3})\s*:\s*(\d{1,3})\s*", value)
    if not match:
        return None
    w, h = int(match.group(1)), int(match.group(2))
    if w == 0 or h == 0:
        return None
    return w, h


def output_size(model: str | ModelSpec, payload: Mapping[str, Any]) -> tuple[int, int]:
    """Pixel size of the image a (validated) payload asks for.

    Aspect-ratio models pick their own pixel count; this returns the nominal size for the
    model's megapixel class (multiples of 16), which is what the estimate and emulator use.
    """
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    if spec.sizing is Sizing.PIXELS:
        w_default = spec.field("width")
        h_default = spec.field("height")
        width = int(payload.get("width") or (w_default.default if w_default else 1024))
        height = int(payload.get("height") or (h_default.default if h_default else 1024))
        return width, height
    ratio = _parse_ratio(str(payload.get("aspect_ratio") or "1:1")) or (1, 1)
    pixels = spec.nominal_megapixels * MEGAPIXEL
    exact_width = math.sqrt(pixels * ratio[0] / ratio[1])
    exact_height = exact_width * ratio[1] / ratio[0]
    return max(64, int(exact_width) // 16 * 16), max(64, int(exact_height) // 16 * 16)


def count_reference_images(payload: Mapping[str, Any]) -> int:
    """How many reference-image fields a payload fills."""
    return sum(1 for name in reference_field_names(_REFERENCE_FIELD_LIMIT) if payload.get(name))


def estimate_cost(
    model: str | ModelSpec,
    width: int,
    height: int,
    reference_images: int = 0,
    *,
    credit_price_usd: Decimal = DEFAULT_CREDIT_PRICE_USD,
) -> CostEstimate:
    """Estimated price of one image, in credits and US dollars.

    Size-priced models: first megapixel + each further started megapixel (see
    `billable_megapixels`) + one megapixel's reference price per reference image (their real
    size is unknown before upload, so each counts as one megapixel). Flat models ignore the size.
    Credits are dollars divided by `credit_price_usd`, rounded up to hundredths.
    """
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    pricing = spec.pricing
    if pricing.flat:
        usd = pricing.first_megapixel_usd
    else:
        extra = billable_megapixels(width, height) - 1
        usd = (
            pricing.first_megapixel_usd
            + pricing.additional_megapixel_usd * extra
            + pricing.reference_megapixel_usd * max(0, reference_images)
        )
    if credit_price_usd <= 0:
        raise ValueError("credit_price_usd must be positive")
    credits = (usd / credit_price_usd).quantize(Decimal("0.01"), rounding=ROUND_UP)
    return CostEstimate(credits=credits, usd=usd)


def estimate_payload_cost(
    model: str | ModelSpec,
    payload: Mapping[str, Any],
    *,
    credit_price_usd: Decimal = DEFAULT_CREDIT_PRICE_USD,
) -> CostEstimate:
    """`estimate_cost` for a validated request payload."""
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    width, height = output_size(spec, payload)
    return estimate_cost(
        spec,
        width,
        height,
        count_reference_images(payload),
        credit_price_usd=credit_price_usd,
    )


# --- validation --------------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?\d+")
#: Whole numbers from 10**18 on are refused outright: far beyond any field's range, and beyond
#: what the float maths of hints and size checks can handle.
_INT_DIGITS = 18
_INT_SCALE = 10**_INT_DIGITS
_NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
#: C0 control characters other than tab, newline and carriage return, plus DEL.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/=_\-\s]+")
_TIMES = "\u00d7"  # the multiplication sign, spelled out so linters do not take it for an x
_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _nearest_multiple(value: int, step: int, minimum: int, maximum: int | None) -> int:
    suggestion = max(minimum, math.floor(value / step + 0.5) * step)
    if maximum is not None:
        suggestion = min(suggestion, maximum // step * step)
    return suggestion


def _integer_bounds(spec: FieldSpec) -> tuple[int, int]:
    """The widest whole numbers a field could ever take, for the "between" message."""
    low = int(spec.minimum) if spec.minimum is not None else 0
    if spec.maximum is not None:
        return low, int(spec.maximum)
    # Only sizes have no maximum of their own: the pixel cap bounds one side by the other's
    # minimum.
    return low, MAX_PIXELS // max(1, low)


def _out_of_scale(spec: FieldSpec) -> str:
    low, high = _integer_bounds(spec)
    return f"{spec.name} must be a whole number between {low} and {high}"


def _parse_int(spec: FieldSpec, value: Any) -> tuple[int | None, str | None]:
    hint = f", e.g. {int(spec.default)}" if spec.default is not None else ""
    if isinstance(value, bool):
        return None, f"{spec.name} must be a whole number, not true/false"
    if isinstance(value, int):
        # Absurd magnitudes would overflow the float maths of hints and size checks.
        return (value, None) if abs(value) < _INT_SCALE else (None, _out_of_scale(spec))
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return (int(value), None) if abs(value) < _INT_SCALE else (None, _out_of_scale(spec))
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        # Count digits before int(): Python refuses to parse more than 4300 of them.
        digits = value.strip().lstrip("+-").lstrip("0")
        if len(digits) > _INT_DIGITS:
            return None, _out_of_scale(spec)
        number = int(value.strip())
        return (number, None) if abs(number) < _INT_SCALE else (None, _out_of_scale(spec))
    return None, f"{spec.name} must be a whole number{hint}"


def _parse_number(spec: FieldSpec, value: Any) -> tuple[float | None, str | None]:
    if isinstance(value, bool):
        return None, f"{spec.name} must be a number, not true/false"
    if isinstance(value, int) and abs(value) >= _INT_SCALE:
        # float() of such an int raises OverflowError; no field takes numbers this large.
        return float("inf") if value > 0 else float("-inf"), None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value), None
    if isinstance(value, str) and _NUMBER_RE.fullmatch(value.strip()):
        return float(value.strip()), None
    example = f", e.g. {_fmt(spec.default)}" if spec.default is not None else ""
    return None, f"{spec.name} must be a number{example}"


def _check_range(spec: FieldSpec, value: float, model: str) -> str | None:
    lo, hi = spec.minimum, spec.maximum
    if lo is not None and hi is not None and not lo <= value <= hi:
        return f"{spec.name} must be between {_fmt(lo)} and {_fmt(hi)} for {model}"
    if lo is not None and value < lo:
        return f"{spec.name} must be at least {_fmt(lo)}"
    if hi is not None and value > hi:
        return f"{spec.name} must be at most {_fmt(hi)} for {model}"
    return None


def _check_field(spec: FieldSpec, value: Any, model: str) -> tuple[Any, str | None]:
    """Parse one present, non-blank value; return (normalized value, error message)."""
    name = spec.name
    if spec.type is FieldType.INTEGER:
        number, error = _parse_int(spec, value)
        if number is None:
            return None, error
        if spec.multiple_of and number % spec.multiple_of:
            lo = int(spec.minimum or spec.multiple_of)
            hi = int(spec.maximum) if spec.maximum is not None else None
            try_value = _nearest_multiple(number, spec.multiple_of, lo, hi)
            return None, f"{name} must be a multiple of {spec.multiple_of}; try {try_value}"
        return number, _check_range(spec, number, model)
    if spec.type is FieldType.NUMBER:
        real, error = _parse_number(spec, value)
        if real is None:
            return None, error
        return real, _check_range(spec, real, model)
    if spec.type is FieldType.BOOLEAN:
        if isinstance(value, bool):
            return value, None
        if isinstance(value, int) and value in (0, 1):
            return bool(value), None
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE, None
        return None, f"{name} must be true or false"
    if spec.type is FieldType.CHOICE:
        if not isinstance(value, str):
            return None, f"{name} must be one of: {', '.join(spec.choices)}"
        choice = value.strip().lower()
        if choice == "jpg" and "jpeg" in spec.choices:
            choice = "jpeg"
        if choice not in spec.choices:
            return None, f"{name} must be one of: {', '.join(spec.choices)}"
        return choice, None
    if spec.type is FieldType.ASPECT_RATIO:
        ratio = _parse_ratio(value) if isinstance(value, str) else None
        if ratio is None:
            return None, f"{name} must look like width:height, e.g. 16:9"
        widest = spec.maximum if spec.maximum is not None else math.inf
        tallest = spec.minimum if spec.minimum is not None else 0.0
        if not tallest - 1e-9 <= ratio[0] / ratio[1] <= widest + 1e-9:
            return None, f"{name} must be between 21:9 and 9:21"
        return f"{ratio[0]}:{ratio[1]}", None
    if spec.type is FieldType.IMAGE:
        if not isinstance(value, str):
            return None, f"{name} must be an https URL or base64-encoded image data"
        text = value.strip()
        if "://" in text[:16]:
            if not text.lower().startswith("https://"):
                return None, f"{name} must be an https URL or base64-encoded image data"
            return text, None
        data = text.split(",", 1)[1] if text.startswith("data:") and "," in text else text
        if not _BASE64_RE.fullmatch(data):
            return None, f"{name} must be an https URL or base64-encoded image data"
        return text, None
    if spec.type is FieldType.URL:
        if not isinstance(value, str) or not re.fullmatch(
            r"https?://[^\s/]+(/\S*)?", value.strip()
        ):
            return None, f"{name} must be an http(s) URL, e.g. https://example.com/hook"
        return value.strip(), None
    if not isinstance(value, str):
        return None, f"{name} must be text"
    if _CONTROL_RE.search(value):
        # PostgreSQL text cannot hold NUL, and no prompt needs other control characters.
        return None, f"{name} must not contain control characters"
    return value, None


def _unknown_field_message(name: str, spec: ModelSpec) -> str:
    accepting = [m.name for m in _MODELS if m.field(name) is not None]
    if name in ("width", "height") and spec.sizing is Sizing.ASPECT_RATIO:
        return f"{name} is not accepted by {spec.name}; use aspect_ratio (e.g. 16:9) instead"
    if name.startswith("input_image") and accepting:
        if spec.max_reference_images == 0:
            return f"{spec.name} does not take reference images"
        return (
            f"{name} is not accepted: {spec.name} takes at most "
            f"{spec.max_reference_images} reference image(s)"
        )
    if accepting and len(accepting) <= 3:
        return f"{name} is only accepted by {', '.join(accepting)}"
    if accepting:
        return f"{name} is not accepted by {spec.name}"
    return f"{name} is not a known field; {spec.name} accepts: {_accepted_fields_text(spec)}"


def _area_error(spec: ModelSpec, params: Mapping[str, Any]) -> FieldError | None:
    width_spec, height_spec = spec.field("width"), spec.field("height")
    if spec.sizing is not Sizing.PIXELS or width_spec is None or height_spec is None:
        return None
    raw_w, raw_h = params.get("width"), params.get("height")
    width = width_spec.default if _is_blank(raw_w) else _parse_int(width_spec, raw_w)[0]
    height = height_spec.default if _is_blank(raw_h) else _parse_int(height_spec, raw_h)[0]
    if width is None or height is None or width <= 0 or height <= 0:
        return None
    if width * height <= MAX_PIXELS:
        return None
    scale = math.sqrt(MAX_PIXELS / (width * height))
    try_w = max(64, int(width * scale) // 16 * 16)
    try_h = max(64, int(height * scale) // 16 * 16)
    return FieldError(
        "width",
        f"width {_TIMES} height must be at most {MAX_PIXELS // MEGAPIXEL} MP "
        f"({MAX_PIXELS:,} pixels); try {try_w} {_TIMES} {try_h}",
    )


def _accepted_fields_text(spec: ModelSpec) -> str:
    names = [n for n in spec.field_names if not n.startswith("input_image")]
    refs = reference_field_names(spec.max_reference_images)
    if refs:
        names.insert(
            names.index("webhook_url"), refs[0] if len(refs) == 1 else f"{refs[0]}…{refs[-1]}"
        )
    return ", ".join(names)


def validate_request(model: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check a request for `model` and return the payload to POST to BFL.

    Defaults are filled in, numeric strings from forms become numbers, and fields the model
    does not accept are refused. Blank optional values (None, "") count as not given. Raises
    `RequestInvalid` listing every problem, each with a message saying how to fix it.
    """
    spec = _BY_NAME.get(model) if isinstance(model, str) else None
    if spec is None:
        raise RequestInvalid(
            [FieldError("model", f"unknown model {model!r}; choose one of: {', '.join(_BY_NAME)}")]
        )

    errors: list[FieldError] = []
    payload: dict[str, Any] = {}

    for fspec in spec.fields:
        raw = params.get(fspec.name)
        if _is_blank(raw):
            if fspec.required:
                errors.append(FieldError(fspec.name, f"{fspec.name} is required"))
            elif fspec.default is not None:
                payload[fspec.name] = fspec.default
            continue
        value, message = _check_field(fspec, raw, spec.name)
        if message is not None:
            errors.append(FieldError(fspec.name, message))
        else:
            payload[fspec.name] = value

    area_error = _area_error(spec, params)
    if area_error is not None:
        # A size that is too big makes the multiple-of-16 hints moot: give one useful hint.
        errors = [e for e in errors if e.field not in ("width", "height")]
        errors.append(area_error)

    for key in params:
        if spec.field(str(key)) is None:
            errors.append(FieldError(str(key), _unknown_field_message(str(key), spec)))

    names = reference_field_names(spec.max_reference_images)
    for i, name in enumerate(names[1:], start=1):
        if name in payload and names[i - 1] not in payload:
            errors.append(
                FieldError(
                    name,
                    f"{name} was given without {names[i - 1]}; fill reference images in order",
                )
            )

    if "webhook_secret" in payload and "webhook_url" not in payload:
        errors.append(FieldError("webhook_secret", "webhook_secret needs a webhook_url"))

    if errors:
        raise RequestInvalid(errors)
    # Prompt first, then the model's own field order, as BFL's examples send it.
    return {name: payload[name] for name in spec.field_names if name in payload}
