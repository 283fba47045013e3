"""A job's recipe: the request that made its image, as JSON and as a "parameters" line."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from app.jobs.models import Job
from app.settings import get_settings

#: Names the recipe is stored under (PNG text keyword, XMP element); readers look for these.
RECIPE_KEY = "flux-recipe"
#: The keyword Stable Diffusion tools (A1111, ComfyUI viewers, Civitai) read for a summary.
PARAMETERS_KEY = "parameters"
RECIPE_VERSION = 1
#: The request fields a recipe carries besides prompt, model, seed and size.
RECIPE_FIELDS = ("steps", "guidance", "prompt_upsampling", "safety_tolerance", "output_format")
_STORED_DIGEST = re.compile(r"/references/([0-9a-f]{64})\.[a-z]+$")


@dataclass(frozen=True)
class Recipe:
    """What a downloaded file says about how it was made (the JSON is `as_dict`)."""

    values: dict[str, Any]

    def as_json(self) -> str:
        return json.dumps(self.values, ensure_ascii=False, separators=(",", ":"))

    def parameters_text(self) -> str:
        """The prompt, then `Name: value` pairs, the layout A1111-style readers show."""
        v = self.values
        pairs = [
            ("Steps", v.get("steps")),
            ("Seed", v.get("seed")),
            ("Size", f"{v.get('width')}x{v.get('height')}"),
            ("Model", v.get("model")),
            ("Guidance", v.get("guidance")),
            ("Prompt upsampling", v.get("prompt_upsampling")),
            ("Safety tolerance", v.get("safety_tolerance")),
            ("Format", v.get("output_format")),
            ("References", len(v.get("reference_images") or []) or None),
            ("Job", v.get("job_url")),
        ]
        line = ", ".join(f"{name}: {value}" for name, value in pairs if value is not None)
        return f"{v.get('prompt', '')}\n{line}"


def job_url(job_id: object) -> str:
    """The studio page of a job: absolute with PUBLIC_URL (or the local address), else a path."""
    base = get_settings().link_base_url
    return f"{base or ''}/gallery/{job_id}"


def reference_hashes(params: dict[str, Any]) -> list[dict[str, str]]:
    """The job's reference images, in field order: `{"sha256": hex}` for stored ones (their key
    is their content hash), `{"url": ...}` for a link BFL fetched itself."""
    found: list[dict[str, str]] = []
    names = sorted(
        (k for k in params if k.startswith("input_image")),
        key=lambda k: int(k.rpartition("_")[2]) if k[-1].isdigit() else 1,
    )
    for name in names:
        value = params[name]
        if not isinstance(value, str) or not value:
            continue
        digest = _STORED_DIGEST.search(value)
        if digest:
            found.append({"sha256": digest.group(1)})
        elif value.startswith("https://"):
            found.append({"url": value})
    return found


def recipe_of(job: Job) -> Recipe:
    """The recipe of a job: the request sent to BFL with the seed BFL used."""
    params = job.params or {}
    seed = job.result_seed if job.result_seed is not None else job.seed
    values: dict[str, Any] = {
        "recipe": RECIPE_VERSION,
        "studio": "FLUX Team Studio",
        "prompt": job.prompt,
        "model": job.model,
        "seed": seed,
        "width": params.get("width", job.width),
        "height": params.get("height", job.height),
    }
    for name in RECIPE_FIELDS:
        if params.get(name) is not None:
            values[name] = params[name]
    values.setdefault("output_format", job.output_format)
    references = reference_hashes(params)
    if references:
        values["reference_images"] = references
    values["job_id"] = str(job.id)
    values["job_url"] = job_url(job.id)
    return Recipe(values)


__all__ = [
    "PARAMETERS_KEY",
    "RECIPE_FIELDS",
    "RECIPE_KEY",
    "Recipe",
    "job_url",
    "recipe_of",
    "reference_hashes",
]
