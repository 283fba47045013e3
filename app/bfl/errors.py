"""Typed errors of the BFL client: what BFL answered (or did not), each with a stable code.

Our own validation of a request is not BFL's answer: it raises `app.errors.RequestInvalid`.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import FieldError


class BFLError(Exception):
    """Base of every error from `app.bfl`.

    `code` is a stable machine string stored on failed jobs; `message` is for people.
    `safe_to_retry` says whether making the very same call again cannot create a second
    (charged) task at BFL: true for anything that never reached BFL or was refused before a
    task existed, and for idempotent reads.
    """

    code: str = "bfl_error"
    default_safe_to_retry: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        safe_to_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.safe_to_retry = self.default_safe_to_retry if safe_to_retry is None else safe_to_retry

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        status = f", status_code={self.status_code}" if self.status_code is not None else ""
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}{status})"


class UnsendableRequest(BFLError, ValueError):
    """The client refused to send a call at all (a model name that is not a BFL path)."""

    code = "invalid_request"


class RequestRejected(BFLError):
    """BFL answered 400/422 (or another 4xx that says the request itself is wrong)."""

    code = "bfl_rejected"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        field_errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, safe_to_retry=False)
        self.field_errors = list(field_errors or [])


class AuthFailed(BFLError):
    """BFL answered 401/403: the key is missing, wrong or revoked. An admin must act."""

    code = "bfl_auth"


class InsufficientCredits(BFLError):
    """BFL answered 402: the account has no credits left for this request."""

    code = "bfl_no_credits"


@dataclass(frozen=True)
class RateLimitInfo:
    """BFL's `X-RateLimit-Limit`, `-Remaining` and `-Reset` headers, when it sends them.

    `reset_after_s` is seconds from when the answer came (the header may be an epoch time or
    a number of seconds; both are converted). Any of them may be None (absent or unreadable).
    """

    limit: int | None
    remaining: int | None
    reset_after_s: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "limit": self.limit,
            "remaining": self.remaining,
            "reset_after_s": self.reset_after_s,
        }


class RateLimited(BFLError):
    """BFL answered 429: too many active tasks. No task was created, so resending is safe.

    `retry_after` is seconds to wait, from the `Retry-After` header (delta-seconds or an
    HTTP-date) or else a `retry_after` number in the JSON body; None when BFL sent neither.
    """

    code = "bfl_rate_limited"
    default_safe_to_retry = True

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = 429,
        retry_after: float | None = None,
        rate_limit: RateLimitInfo | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, safe_to_retry=True)
        self.retry_after = retry_after
        self.rate_limit = rate_limit


class ServerFailed(BFLError):
    """BFL answered 5xx.

    For a submission this is not proof that no task was created (a proxy may answer 502/504
    after BFL accepted the task), so the client marks it unsafe to resend; reads are safe.
    """

    code = "bfl_server_error"


class ServiceUnavailable(ServerFailed):
    """BFL answered 503: the service did not process the request, so no task was created.

    Safe to send again, for a submission too; the studio treats it as an account-wide outage.
    """

    code = "bfl_unavailable"
    default_safe_to_retry = True


class NotSent(BFLError):
    """The request never reached BFL complete (no connection, or the body was not delivered)."""

    code = "bfl_not_sent"
    default_safe_to_retry = True


class OutcomeUnknown(BFLError):
    """A submission was sent but no answer came back: BFL may have created (and charged) a task.

    Never resend automatically; the job ends as `submission_unknown`.
    """

    code = "submission_unknown"


class NoResponse(BFLError):
    """A read-only call (poll, credits) was sent but no answer came back; repeating it is safe."""

    code = "bfl_no_response"
    default_safe_to_retry = True


class UnexpectedResponse(BFLError):
    """BFL answered with something this client cannot read (not JSON, missing fields)."""

    code = "bfl_bad_response"
    default_safe_to_retry = True


class ImageFetchFailed(BFLError):
    """Downloading a result image failed."""

    code = "image_fetch_failed"
    default_safe_to_retry = True


class ResultUnavailable(ImageFetchFailed):
    """The signed result link answered 403/404/410: it expired or never existed."""

    code = "result_expired"
    default_safe_to_retry = False


class ImageTooLarge(ImageFetchFailed):
    """The result image is bigger than the configured limit; the download was aborted."""

    code = "image_too_large"
    default_safe_to_retry = False


class ImageWrongType(ImageFetchFailed):
    """The result link served something that is not a JPEG, PNG or WebP image."""

    code = "image_bad_type"
    default_safe_to_retry = False


class InsecureURL(BFLError):
    """A URL handed to the client was not https and insecure URLs are not allowed."""

    code = "insecure_url"
    default_safe_to_retry = False
