"""Webhook URL tokens and body signatures."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from app.bfl.webhooks import (
    compute_signature,
    sign_webhook_token,
    verify_signature,
    verify_webhook_token,
)

SECRET = "studio-secret-for-tests"


def test_token_round_trip_and_binding() -> None:
    token = sign_webhook_token(SECRET, "job-1")
    assert len(token) == 64
    assert verify_webhook_token(SECRET, "job-1", token)
    assert verify_webhook_token(SECRET, "job-1", token.upper())
    assert not verify_webhook_token(SECRET, "job-2", token)
    assert not verify_webhook_token("other-secret", "job-1", token)
    assert not verify_webhook_token(SECRET, "job-1", "")
    assert not verify_webhook_token("", "job-1", token)
    with pytest.raises(ValueError):
        sign_webhook_token("", "job-1")


def test_body_signature() -> None:
    body = b'{"id":"t1","status":"Ready"}'
    digest = hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
    assert compute_signature(body, "hook-secret") == f"sha256={digest}"
    assert verify_signature(body, f"sha256={digest}", "hook-secret")
    assert verify_signature(body, f"SHA256={digest.upper()}", "hook-secret")
    assert verify_signature(body, digest, "hook-secret")
    assert not verify_signature(body + b" ", f"sha256={digest}", "hook-secret")
    assert not verify_signature(body, f"sha256={digest}", "wrong")
    assert not verify_signature(body, None, "hook-secret")
    assert not verify_signature(body, "sha256=", "hook-secret")
