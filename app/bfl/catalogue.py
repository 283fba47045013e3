"""The model catalogue: every BFL model we offer, its request fields, limits and prices.

This is the one place for facts about BFL's models. Anything BFL has not published as a
guarantee is still data here (marked in `unconfirmed`), so correcting it is a one-line change.
Every model names, in `sources`, the public page each of its prices and limits was read from
and when; `SOURCES` below spells those pages out once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_UP, Decimal
from enum import StrEnum
from typing import Any

from app.errors import FieldError, RequestInvalid

__all__ = [
    "ACCOUNT_ACTIVE_TASK_CAP",
    "ASPECT_PRESETS",
    "DEFAULT_CREDIT_PRICE_USD",
    "MAX_INPUT_PIXELS",
    "MAX_INPUT_PIXELS_SOURCE",
    "MAX_PIXELS",
    "MAX_REFERENCE_IMAGES",
    "MEGAPIXEL",
    "PROMPT_MAX_CHARS",
    "SOURCES",
    "WEBHOOK_URL_MAX_LENGTH",
    "CostEstimate",
    "FieldSpec",
    "FieldType",
    "ModelSpec",
    "Pricing",
    "Sizing",
    "UnknownModel",
    "billable_megapixels",
    "catalogue_as_dict",
    "count_reference_images",
    "estimate_cost",
    "estimate_payload_cost",
    "follow_input_size",
    "get_model",
    "list_models",
    "model_names",
    "output_size",
    "reference_field_names",
    "reference_megapixels",
    "validate_request",
]

#: Where each fact was read, by short name; `ModelSpec.sources` refers to these names. Each
#: entry is the page's address (host and path) and the day it was read.
SOURCES: dict[str, str] = {
    # The price table: 1 credit = $0.01; FLUX.2 "from" prices per model; FLUX.1 per image.
    "pricing": "docs.bfl.ai/quick_start/pricing (read 2026-11-30)",
    # BFL's own integration guide: FLUX.2 first/extra megapixel prices, the formula
    # first MP + (output MP - 1) x MP price + input MP x MP price, FLUX.1 prices, 4 MP cap,
    # multiples of 16, references per model (klein 4, pro/max/flex 8).
    "bfl-skills": (
        "github.com/black-forest-labs/skills skills/bfl-api/SKILL.md and "
        "references/endpoints.md (2026-02-03 revision, read 2026-11-30)"
    ),
    # BFL's request schemas (the same file docs.bfl.ai/api-reference/models/* embeds), read
    # from the copy kept in a public client library, snapshot of 2026-04-29.
    "openapi": (
        "api.bfl.ai/openapi.json, as kept in github.com/tryAGI/BlackForestLabs "
        "src/libs/BlackForestLabs/openapi.json (snapshot 2026-04-29, read 2026-11-30)"
    ),
    # Third-party pages that repeat BFL's Kontext rule: safety 0-6 to create, 0-2 to edit.
    "kontext-editing-safety": (
        "docs.kie.ai/flux-kontext-api/quickstart (third party, read 2026-11-30)"
    ),
    # BFL's FLUX.2 editing guide: input images (input_image ... input_image_8) may be up to
    # 4 MP each; without width and height the output follows the first input's size.
    "flux2-editing": "docs.bfl.ai/flux_2/flux2_image_editing (read 2026-11-30)",
    # Not found in anything searchable: kept as our own conservative reading.
    "none": "no public page found (searched 2026-11-30); our own conservative reading",
}

#: One billing megapixel. BFL's 4 MP cap is 4 x 2**20 px, so their "megapixel" is 1024 x 1024.
MEGAPIXEL = 1024 * 1024
#: Largest output in pixels for size-by-pixels models: "max 4MP total" (SOURCES["bfl-skills"]).
#: Larger sizes are refused here; whether BFL resizes them instead is unconfirmed.
MAX_PIXELS = 4 * MEGAPIXEL
#: Longest webhook_url BFL's schemas accept (maxLength 2083, SOURCES["openapi"]).
WEBHOOK_URL_MAX_LENGTH = 2083
#: Active tasks (submitted, not finished) BFL allows per account unless a model says otherwise.
ACCOUNT_ACTIVE_TASK_CAP = 24
#: US dollars per BFL credit (unconfirmed); the app passes its own setting.
DEFAULT_CREDIT_PRICE_USD = Decimal("0.01")
#: BFL's own domain: its API hosts (global, EU, US) and regional polling hosts live under it.
BFL_DOMAIN = "bfl.ai"
#: Most reference images any model takes (input_image ... input_image_8, SOURCES["openapi"]);
#: each model's own limit is `ModelSpec.max_reference_images`.
MAX_REFERENCE_IMAGES = 8
#: Largest reference image BFL takes, in pixels (width x height): 4 MP, SOURCES["flux2-editing"].
#: The studio downscales larger references to fit before anything is paid.
MAX_INPUT_PIXELS = 4 * MEGAPIXEL
#: The page BFL states the input limit on (SOURCES["flux2-editing"]), for people and the API.
MAX_INPUT_PIXELS_SOURCE = "https://docs.bfl.ai/flux_2/flux2_image_editing"
#: Longest prompt, in characters, for every model and every way in (API, page, retry, vary).
#: BFL's guide allows FLUX.2 prompts of up to 32K tokens (SOURCES["bfl-skills"]) and publishes
#: no character limit. A token is about four characters of English and about one of Chinese
#: or Japanese, so 50,000 characters stay within 32K tokens in any script while allowing all
#: but the longest English prompts BFL takes; and 50,000 characters of the widest UTF-8 (4
#: bytes each) still fit one form field (MAX_FORM_FIELD_BYTES, 256 KiB), so the page takes
#: every prompt the API takes.
PROMPT_MAX_CHARS = 50_000


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
    #: Longest text accepted, in characters (None: no limit of its own).
    max_length: int | None = None
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
            "max_length": self.max_length,
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
    #: Highest safety_tolerance when reference images are given (None: the field's maximum).
    editing_safety_maximum: int | None = None
    #: Largest reference image this model takes, in pixels; larger ones are downscaled.
    max_input_pixels: int = MAX_INPUT_PIXELS
    #: Where each fact was read: fact name ("price", "fields", "reference_images", ...) ->
    #: a key of `SOURCES`.
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
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
            "editing_safety_maximum": self.editing_safety_maximum,
            "max_input_pixels": self.max_input_pixels,
            "max_input_pixels_source": MAX_INPUT_PIXELS_SOURCE,
            "pricing": self.pricing.as_dict(),
            "sources": {fact: SOURCES[key] for fact, key in self.sources.items()},
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
    "prompt",
    FieldType.STRING,
    "Prompt",
    "What the image should show.",
    required=True,
    max_length=PROMPT_MAX_CHARS,
)
_SEED = FieldSpec(
    "seed",
    FieldType.INTEGER,
    "Seed",
    "Same seed and same inputs reproduce the image; leave empty for a random one.",
    minimum=0,
    maximum=2**32 - 1,  # unconfirmed upper bound; kept conservative
)


def _output_format(default: str) -> FieldSpec:
    # Every schema we use shares one OutputFormat: jpeg, png or webp (SOURCES["openapi"]).
    return FieldSpec(
        "output_format",
        FieldType.CHOICE,
        "Format",
        "JPEG and WebP are smaller; PNG is lossless.",
        default=default,
        choices=("jpeg", "png", "webp"),
    )


_OUTPUT_FORMAT = _output_format("jpeg")
_WEBHOOK_URL = FieldSpec(
    "webhook_url",
    FieldType.URL,
    "Webhook URL",
    "Called when the task finishes.",
    max_length=WEBHOOK_URL_MAX_LENGTH,
    internal=True,
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
        # The schema only says "at least 64"; BFL's guide adds multiples of 16 and 4 MP in all.
        # Its default of 0 leaves the size to BFL: we send 1024 x 1024, the guide's example.
        _dimension("width", "Width", default=1024, minimum=64, maximum=None, step=16),
        _dimension("height", "Height", default=1024, minimum=64, maximum=None, step=16),
        _SEED,
        # Flux2Inputs, Flux2FlexInputs and Flux2KleinInputs all say 0-5, default 2.
        _safety(5),
        _OUTPUT_FORMAT,
        *extra,
        *_references(references),
        _WEBHOOK_URL,
        _WEBHOOK_SECRET,
    )


#: Where the FLUX.2 facts were read; each model adds or overrides its own.
_FLUX2_SOURCES: dict[str, str] = {
    "price": "bfl-skills",
    "fields": "openapi",
    "defaults": "openapi",
    "reference_images": "openapi",
    "safety_tolerance": "openapi",
    "output_format": "openapi",
    "webhook_url": "openapi",
    "size": "bfl-skills",
    "input_pixels": "flux2-editing",
    "seed": "none",
}

_FLUX2_UNCONFIRMED = (
    "seed upper bound (the schema gives none; 2**32 - 1 kept)",
    "sizes above 4 MP: refused here; BFL may resize them instead",
    "inputs above 4 MP priced as 4 MP (BFL resizes them, by third-party pricing notes)",
    "output size of an edit when no size is sent (BFL follows the first input; priced here as"
    " its size cut to multiples of 16 within 4 MP)",
)

#: Where the FLUX1.1 [pro] and Ultra facts were read.
_FLUX1_SOURCES: dict[str, str] = {
    "price": "bfl-skills",
    "fields": "openapi",
    "defaults": "openapi",
    "reference_images": "openapi",
    "safety_tolerance": "openapi",
    "output_format": "openapi",
    "webhook_url": "openapi",
    "prompt_upsampling": "openapi",
    "seed": "none",
}


def _kontext_fields() -> tuple[FieldSpec, ...]:
    # FluxKontextProInputs (both Kontext endpoints): input_image plus input_image_2..4, marked
    # "experimental multiref"; output_format defaults to png there; safety 0-6.
    return (
        _PROMPT,
        *_references(4),
        _aspect_ratio(None),
        _upsampling(False),
        _SEED,
        _safety(6),
        _output_format("png"),
        _WEBHOOK_URL,
        _WEBHOOK_SECRET,
    )


_KONTEXT_SOURCES: dict[str, str] = {
    **_FLUX1_SOURCES,
    "size": "none",
    "editing_safety_maximum": "kontext-editing-safety",
}
_KONTEXT_UNCONFIRMED = (
    "seed upper bound",
    "safety_tolerance above 2 refused when editing (third-party reading; the schema says 0-6)",
    "the price with input_image_2..4 (flat per image assumed)",
    "output size (about 1 MP)",
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
        # Flux2Inputs has no prompt_upsampling: BFL decides for itself on pro and max.
        fields=_flux2_fields(references=MAX_REFERENCE_IMAGES),
        max_reference_images=MAX_REFERENCE_IMAGES,
        pricing=Pricing(
            Decimal("0.03"),
            Decimal("0.015"),
            Decimal("0.015"),
            confirmed=True,
            note="3 cents the first megapixel, 1.5 cents each further one and each input one.",
        ),
        sources=_FLUX2_SOURCES,
        unconfirmed=(
            *_FLUX2_UNCONFIRMED,
            "turning BFL's own prompt upsampling off (a disable_pup field came and went)",
        ),
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
            references=MAX_REFERENCE_IMAGES,
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
                    # Flux2FlexInputs says 5.0; BFL's guide shows 4.5: the schema is what
                    # BFL's server fills in, so it is the default we send.
                    default=5.0,
                    minimum=1.5,
                    maximum=10,
                ),
                # Flux2FlexInputs: prompt_upsampling, default true.
                _upsampling(True),
            ),
        ),
        max_reference_images=MAX_REFERENCE_IMAGES,
        pricing=Pricing(
            Decimal("0.05"),
            Decimal("0.05"),
            Decimal("0.05"),
            confirmed=True,
            note="5 cents per megapixel of output and of each input image.",
        ),
        sources={**_FLUX2_SOURCES, "prompt_upsampling": "openapi", "steps": "openapi"},
        unconfirmed=_FLUX2_UNCONFIRMED,
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
        fields=_flux2_fields(references=MAX_REFERENCE_IMAGES),
        max_reference_images=MAX_REFERENCE_IMAGES,
        pricing=Pricing(
            Decimal("0.07"),
            Decimal("0.03"),
            Decimal("0.03"),
            confirmed=True,
            note="7 cents the first megapixel, 3 cents each further one and each input one.",
        ),
        sources=_FLUX2_SOURCES,
        unconfirmed=(
            *_FLUX2_UNCONFIRMED,
            "grounding search (named on the price page; no request field for it)",
            "turning BFL's own prompt upsampling off (a disable_pup field came and went)",
        ),
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
            confirmed=True,
            note="1.4 cents the first megapixel, 0.1 cent each further one and each input one.",
        ),
        sources=_FLUX2_SOURCES,
        unconfirmed=_FLUX2_UNCONFIRMED,
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
            confirmed=True,
            note="1.5 cents the first megapixel, 0.2 cent each further one and each input one.",
        ),
        sources=_FLUX2_SOURCES,
        unconfirmed=_FLUX2_UNCONFIRMED,
    ),
    ModelSpec(
        name="flux-2-klein-9b-preview",
        label="FLUX.2 [klein] 9B preview",
        family="FLUX.2",
        description="Klein 9B's preview endpoint, where BFL's newest klein weights land first.",
        speed="very fast",
        quality="good+ (changes as BFL updates it)",
        price="very low",
        sizing=Sizing.PIXELS,
        # Same request schema as klein 9B (Flux2KleinInputs), its own endpoint.
        fields=_flux2_fields(references=4),
        max_reference_images=4,
        pricing=Pricing(
            Decimal("0.015"),
            Decimal("0.002"),
            Decimal("0.002"),
            confirmed=False,
            note="No published price; klein 9B's is assumed. BFL's reported cost is charged.",
        ),
        sources={**_FLUX2_SOURCES, "price": "none"},
        unconfirmed=(*_FLUX2_UNCONFIRMED, "price (none published; klein 9B's assumed)"),
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
        # FluxPro11Inputs: 256-1440 in steps of 32, default 1024 x 768; safety 0-6.
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
        pricing=Pricing(
            Decimal("0.04"), flat=True, confirmed=True, note="4 cents per image, any size."
        ),
        sources={**_FLUX1_SOURCES, "size": "openapi"},
        unconfirmed=("seed upper bound",),
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
        # FluxUltraInput: aspect_ratio default 16:9, raw default false, safety 0-6.
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
        pricing=Pricing(
            Decimal("0.06"), flat=True, confirmed=True, note="6 cents per image, any size."
        ),
        sources={**_FLUX1_SOURCES, "size": "none"},
        unconfirmed=("seed upper bound", "output size (about 4 MP)"),
    ),
    ModelSpec(
        name="flux-kontext-pro",
        label="FLUX.1 Kontext [pro]",
        family="FLUX.1",
        description="Edit an image with words, or create one; up to four reference images.",
        speed="fast",
        quality="high",
        price="low",
        sizing=Sizing.ASPECT_RATIO,
        fields=_kontext_fields(),
        max_reference_images=4,
        editing_safety_maximum=2,
        pricing=Pricing(
            Decimal("0.04"), flat=True, confirmed=True, note="4 cents per image, any size."
        ),
        sources=_KONTEXT_SOURCES,
        unconfirmed=_KONTEXT_UNCONFIRMED,
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
        fields=_kontext_fields(),
        max_reference_images=4,
        editing_safety_maximum=2,
        active_task_cap=6,
        pricing=Pricing(
            Decimal("0.08"), flat=True, confirmed=True, note="8 cents per image, any size."
        ),
        sources={**_KONTEXT_SOURCES, "active_task_cap": "none"},
        unconfirmed=(*_KONTEXT_UNCONFIRMED, "active task cap of 6"),
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
            "prompt_max_chars": PROMPT_MAX_CHARS,
            "max_reference_images": MAX_REFERENCE_IMAGES,
            "bfl_account_active_task_cap": ACCOUNT_ACTIVE_TASK_CAP,
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


def follow_input_size(size: tuple[int, int]) -> tuple[int, int]:
    """The output size (pixels) of an edit sent without width and height: the first input's
    size, scaled down to `MAX_PIXELS` if larger and cut to multiples of 16 (at least 64)."""
    width, height = size
    scale = min(1.0, math.sqrt(MAX_PIXELS / max(1, width * height)))
    return (
        max(64, int(width * scale) // 16 * 16),
        max(64, int(height * scale) // 16 * 16),
    )


def output_size(
    model: str | ModelSpec,
    payload: Mapping[str, Any],
    first_reference: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """Pixel size of the image a (validated) payload asks for.

    Aspect-ratio models pick their own pixel count; this returns the nominal size for the
    model's megapixel class (multiples of 16), which is what the estimate and emulator use.
    An edit with no width and height follows its first reference image (`first_reference`,
    its (width, height) where known; `follow_input_size`), as BFL does.
    """
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    if spec.sizing is Sizing.PIXELS:
        unsized = payload.get("width") is None and payload.get("height") is None
        if unsized and first_reference is not None and count_reference_images(payload):
            return follow_input_size(first_reference)
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
    return sum(1 for name in reference_field_names(MAX_REFERENCE_IMAGES) if payload.get(name))


def reference_megapixels(size: tuple[int, int] | None) -> int:
    """Megapixels one reference image is priced at: 1 to 4.

    Its width x height rounded up like an output's (`billable_megapixels`), at most the 4 MP an
    input is resized to (unconfirmed); one megapixel when its size is not known (a URL).
    """
    if size is None:
        return 1
    return min(billable_megapixels(*size), MAX_PIXELS // MEGAPIXEL)


def estimate_cost(
    model: str | ModelSpec,
    width: int,
    height: int,
    reference_images: int = 0,
    *,
    reference_sizes: Sequence[tuple[int, int] | None] = (),
    credit_price_usd: Decimal = DEFAULT_CREDIT_PRICE_USD,
) -> CostEstimate:
    """Estimated price of one image, in credits and US dollars.

    Size-priced models: first megapixel + each further started megapixel (see
    `billable_megapixels`) + the input-megapixel price for each reference image, at
    `reference_megapixels` of its size (`reference_sizes`, in the order of the fields; images
    beyond the sizes given, up to `reference_images`, count as one megapixel each). Flat
    models ignore sizes. Credits are dollars divided by `credit_price_usd`, rounded up to
    hundredths.
    """
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    pricing = spec.pricing
    if pricing.flat:
        usd = pricing.first_megapixel_usd
    else:
        extra = billable_megapixels(width, height) - 1
        count = max(0, reference_images, len(reference_sizes))
        sizes = [*reference_sizes, *([None] * (count - len(reference_sizes)))]
        inputs = sum(reference_megapixels(size) for size in sizes)
        usd = (
            pricing.first_megapixel_usd
            + pricing.additional_megapixel_usd * extra
            + pricing.reference_megapixel_usd * inputs
        )
    if credit_price_usd <= 0:
        raise ValueError("credit_price_usd must be positive")
    credits = (usd / credit_price_usd).quantize(Decimal("0.01"), rounding=ROUND_UP)
    return CostEstimate(credits=credits, usd=usd)


def estimate_payload_cost(
    model: str | ModelSpec,
    payload: Mapping[str, Any],
    *,
    reference_sizes: Sequence[tuple[int, int] | None] = (),
    credit_price_usd: Decimal = DEFAULT_CREDIT_PRICE_USD,
) -> CostEstimate:
    """`estimate_cost` for a validated request payload.

    `reference_sizes` are the (width, height) of its reference images in field order, where
    known; the others count as one megapixel each.
    """
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    sizes = list(reference_sizes)
    width, height = output_size(spec, payload, sizes[0] if sizes else None)
    count = count_reference_images(payload)
    return estimate_cost(
        spec,
        width,
        height,
        count,
        reference_sizes=list(reference_sizes)[:count],
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
        if isinstance(value, str) and spec.max_length and len(value.strip()) > spec.max_length:
            return None, f"{name} must be at most {spec.max_length} characters"
        if not isinstance(value, str) or not re.fullmatch(
            r"https?://[^\s/]+(/\S*)?", value.strip()
        ):
            return None, f"{name} must be an http(s) URL, e.g. https://example.com/hook"
        return value.strip(), None
    if not isinstance(value, str):
        return None, f"{name} must be text"
    if spec.max_length is not None and len(value) > spec.max_length:
        return None, (
            f"the {name} has {len(value):,} characters; shorten it to at most {spec.max_length:,}"
        )
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
    # Named on the longer side: that is the one to shorten (and the one a form shows it at).
    return FieldError(
        "height" if height > width else "width",
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

    if (
        spec.sizing is Sizing.PIXELS
        and count_reference_images(payload)
        and all(_is_blank(params.get(n)) for n in ("width", "height"))
    ):
        # Editing with no size given: BFL's default, the output follows the first input's size.
        payload.pop("width", None)
        payload.pop("height", None)

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

    tolerance = payload.get("safety_tolerance")
    editing_cap = spec.editing_safety_maximum
    if (
        editing_cap is not None
        and isinstance(tolerance, int)
        and tolerance > editing_cap
        and count_reference_images(payload)
    ):
        errors.append(
            FieldError(
                "safety_tolerance",
                f"safety_tolerance must be between 0 and {editing_cap} for {spec.name} "
                "when editing reference images",
            )
        )

    if "webhook_secret" in payload and "webhook_url" not in payload:
        errors.append(FieldError("webhook_secret", "webhook_secret needs a webhook_url"))

    if errors:
        raise RequestInvalid(errors)
    # Prompt first, then the model's own field order, as BFL's examples send it.
    return {name: payload[name] for name in spec.field_names if name in payload}
