"""BFL's API as the studio sees it: the model catalogue, the HTTP client and its errors."""

from app.bfl.catalogue import (
    ASPECT_PRESETS,
    CostEstimate,
    ModelSpec,
    catalogue_as_dict,
    estimate_cost,
    get_model,
    list_models,
    validate_request,
)
from app.bfl.client import BFLClient, FetchedImage, PollResult, Submission, TaskStatus
from app.bfl.errors import BFLError

__all__ = [
    "ASPECT_PRESETS",
    "BFLClient",
    "BFLError",
    "CostEstimate",
    "FetchedImage",
    "ModelSpec",
    "PollResult",
    "Submission",
    "TaskStatus",
    "catalogue_as_dict",
    "estimate_cost",
    "get_model",
    "list_models",
    "validate_request",
]
