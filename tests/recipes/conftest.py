"""Fixtures for the recipe tests."""

from tests.api.conftest import client, make_caller
from tests.signed_in import sign_in

__all__ = ["client", "make_caller", "sign_in"]
