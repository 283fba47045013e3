"""Pages: import a recipe from a dropped or picked image into the generate form."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile

from app.auth.deps import ChangingActor
from app.errors import FieldError, RequestInvalid, StudioError, answer_refusals_with
from app.limits import read_form
from app.recipes.recipe import RECIPE_FIELDS
from app.recipes.service import recipe_in_file
from app.templating import templates

router = APIRouter(tags=["pages"])


def generate_query(recipe: dict[str, Any]) -> str:
    """The generate page's address with the recipe's settings as its query ("/?model=...")."""
    values: dict[str, str] = {}
    for name in ("model", "prompt", "seed", "width", "height", *RECIPE_FIELDS):
        value = recipe.get(name)
        if value is None or isinstance(value, dict | list):
            continue
        values[name] = ("true" if value else "") if isinstance(value, bool) else str(value)
    return "/?" + urlencode(values)


def _refused(request: Request, exc: StudioError) -> Response | None:
    if not request.headers.get("hx-request") or exc.status_code != 422:
        return None
    message = exc.fields[0].message if exc.fields else exc.message
    return templates.TemplateResponse(
        request,
        "partials/notice.html",
        {"message": f"No recipe imported: {message}.", "kind": "error"},
    )


@router.post("/recipes/import", summary="Fill the generate form from an image's recipe")
async def import_recipe(request: Request, actor: ChangingActor) -> Response:
    answer_refusals_with(request, lambda exc: _refused(request, exc))
    form = await read_form(request)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise RequestInvalid([FieldError("file", "choose or drop an image file")])
    recipe = recipe_in_file(await upload.read())
    target = generate_query(recipe)
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)
