"""Fixtures for the gallery tests."""

from tests.signed_in import SignIn, sign_in

__all__ = ["SignIn", "sign_in"]
