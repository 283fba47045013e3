"""Checks that a BFL webhook call is genuine: our own URL token, and BFL's body signature.

The studio does not rely on BFL's signature scheme (unpublished), so each job's webhook URL
carries an HMAC token of the job id made with the studio's secret, and a webhook only wakes
the poller: the job's outcome always comes from polling BFL.
"""

from __future__ import annotations

import hashlib
import hmac

#: Header BFL is believed to sign webhook bodies with (unconfirmed reading of their docs).
SIGNATURE_HEADER = "X-BFL-Signature"
#: Prefix of the header value, as in "sha256=<hex digest>" (unconfirmed).
SIGNATURE_PREFIX = "sha256="

# Binds tokens to their purpose, so a token made with the same secret for something else
# (a CSRF token, say) can never pass as a webhook token.
_TOKEN_CONTEXT = b"flux-studio/bfl-webhook/v1\x00"


def sign_webhook_token(secret: str, job_id: str) -> str:
    """The token to put in job `job_id`'s webhook URL path (64 hex characters)."""
    if not secret:
        raise ValueError("a webhook secret is required")
    message = _TOKEN_CONTEXT + str(job_id).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_webhook_token(secret: str, job_id: str, token: str) -> bool:
    """True if `token` is the one `sign_webhook_token` makes for this job; constant time."""
    if not secret or not token:
        return False
    expected = sign_webhook_token(secret, job_id)
    return hmac.compare_digest(expected.encode(), token.strip().lower().encode())


def compute_signature(body: bytes, secret: str) -> str:
    """The header value for a body: "sha256=" + hex HMAC-SHA256 of the raw body."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(body: bytes, header_value: str | None, secret: str) -> bool:
    """True if `header_value` is a valid signature of the raw `body` with `secret`.

    Our best reading of BFL's scheme (unconfirmed): "sha256=<hex HMAC-SHA256 of the body>".
    A bare hex digest is accepted too. Constant-time comparison.
    """
    if not header_value or not secret:
        return False
    value = header_value.strip()
    if value.lower().startswith(SIGNATURE_PREFIX):
        value = value[len(SIGNATURE_PREFIX) :]
    expected = compute_signature(body, secret)[len(SIGNATURE_PREFIX) :]
    return hmac.compare_digest(expected.encode(), value.lower().encode())
