"""Fixtures for the board and bulk tests."""

from tests.api.conftest import client, make_caller
from tests.costs.test_browser import web
from tests.signed_in import sign_in

__all__ = ["client", "make_caller", "sign_in", "web"]
