"""Project tests use the API's callers and clients and the signed-in page client."""

from __future__ import annotations

from tests.api.conftest import client, make_caller
from tests.signed_in import sign_in

__all__ = ["client", "make_caller", "sign_in"]
