"""The one HTTP client for BFL's API: submit, poll, download results, read the credit balance."""

from __future__ import annotations

import email.utils
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urljoin, urlsplit

import httpx

from app.bfl.catalogue import BFL_DOMAIN
from app.bfl.errors import (
    AuthFailed,
    BFLError,
    ImageFetchFailed,
    ImageTooLarge,
    ImageWrongType,
    InsecureURL,
    InsufficientCredits,
    NoResponse,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    RateLimitInfo,
    RequestRejected,
    ResultUnavailable,
    ServerFailed,
    ServiceUnavailable,
    UnexpectedResponse,
    UnsendableRequest,
)
from app.errors import FieldError

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_TIMEOUT",
    "BFLClient",
    "FetchedImage",
    "PollResult",
    "Submission",
    "TaskStatus",
    "host_allowed",
    "parse_rate_limit_headers",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)
DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
_TYPE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
_MAX_REDIRECTS = 5
_MODEL_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{0,63}")
_CHUNK = 64 * 1024

Operation = Literal["submit", "read"]

# Which httpx failures prove the request never reached BFL complete.
#  - ConnectError / ConnectTimeout / PoolTimeout: no connection was ever used for it.
#  - WriteError: httpcore swallows write errors while sending a request and goes on to read
#    the answer (so a failure there surfaces as a read error, below); one that does surface
#    means the request was never written out in full.
#  - WriteTimeout: part of the body was still unsent when time ran out, so the server never
#    held a complete JSON document and cannot have created a task from it.
#  - UnsupportedProtocol / LocalProtocolError / ProxyError: refused locally or by our proxy.
# Everything else (ReadTimeout, ReadError, RemoteProtocolError, ...) happened after the
# request was written: the server may have acted on it, so a submission's outcome is unknown.
_NOT_SENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.ProxyError,
)


class TaskStatus(StrEnum):
    """A BFL task's state, as `get_result` reports it."""

    PENDING = "Pending"
    READY = "Ready"
    REQUEST_MODERATED = "Request Moderated"
    CONTENT_MODERATED = "Content Moderated"
    ERROR = "Error"
    NOT_FOUND = "Task not found"

    @property
    def is_terminal(self) -> bool:
        return self is not TaskStatus.PENDING


_STATUS_BY_KEY = {s.value.lower(): s for s in TaskStatus}


@dataclass(frozen=True)
class Submission:
    """BFL's answer to an accepted `POST /v1/<model>`."""

    id: str
    polling_url: str | None
    cost: Decimal | None
    input_mp: float | None
    output_mp: float | None
    raw: dict[str, Any] = field(repr=False)
    #: BFL's X-RateLimit-* headers on the answer, when it sent any.
    rate_limit: RateLimitInfo | None = None


@dataclass(frozen=True)
class PollResult:
    """One `get_result` answer."""

    status: TaskStatus
    progress: float | None = None
    sample_url: str | None = field(default=None, repr=False)  # signed: keep it out of logs
    seed: int | None = None
    message: str | None = None
    details: Any = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    #: The filters BFL named for a moderated task (`details["Moderation Reasons"]`).
    moderation_reasons: tuple[str, ...] = ()
    #: BFL's own explanation from `details`/`error`, without our words around it.
    explanation: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal


@dataclass(frozen=True)
class FetchedImage:
    """A downloaded result image."""

    content: bytes = field(repr=False)
    content_type: str


#: delta-seconds (RFC 9110 §10.2.3 says digits; a decimal fraction is tolerated).
_DELTA_SECONDS = re.compile(r"\d{1,12}(?:\.\d{1,6})?")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value, or None when it is absent or unreadable.

    RFC 9110 §10.2.3 allows delta-seconds (`"120"`) or an HTTP-date in any of its three forms
    (IMF-fixdate, RFC 850, asctime; all are read as GMT). A date in the past means 0. Anything
    else (negative or non-finite numbers, free text) is ignored: None, never an exception.
    """
    if not value or not value.strip():
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    if not any(c.isalpha() for c in text):
        return None  # "-5", "1e3", "inf" and the like: not delta-seconds, not a date
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # asctime has no zone; HTTP-dates are always GMT
    reference = now or datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())


def _header_int(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit() or len(value.strip()) > 12:
        return None
    return int(value.strip())


def parse_rate_limit_headers(
    headers: Mapping[str, str], *, now: datetime | None = None
) -> RateLimitInfo | None:
    """BFL's `X-RateLimit-Limit/-Remaining/-Reset` headers, or None when none is present.

    `X-RateLimit-Reset` is read as seconds from now, or as a Unix time when it is larger than
    a day's worth of seconds (both conventions are in use); unreadable values become None.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    names = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
    if not any(name in lowered for name in names):
        return None
    reset_after: float | None = None
    reset = lowered.get("x-ratelimit-reset", "").strip()
    if _DELTA_SECONDS.fullmatch(reset):
        number = float(reset)
        if number > 86_400:
            reference = (now or datetime.now(UTC)).timestamp()
            number = max(0.0, number - reference)
        reset_after = number
    return RateLimitInfo(
        limit=_header_int(lowered.get("x-ratelimit-limit")),
        remaining=_header_int(lowered.get("x-ratelimit-remaining")),
        reset_after_s=reset_after,
    )


def _body_retry_after(response: httpx.Response) -> float | None:
    """A `retry_after` number in a JSON error body (`{"error": ..., "retry_after": 5}`)."""
    try:
        body = response.json()
    except ValueError:
        return None
    value = body.get("retry_after") if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    return parse_retry_after(str(value))


def _media_type(header: str | None) -> str:
    media = (header or "").split(";", 1)[0].strip().lower()
    return _TYPE_ALIASES.get(media, media)


def _sniff_image_type(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _normal_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """True when `host` is one of `allowed` or a subdomain of one (`eu.api.bfl.ai` under
    `bfl.ai`). Look-alikes are not: `evilbfl.ai` and `bfl.ai.evil.test` are not under `bfl.ai`.
    """
    name = _normal_host(host)
    if not name:
        return False
    for entry in allowed:
        domain = _normal_host(entry).lstrip("*").lstrip(".")
        if domain and (name == domain or name.endswith("." + domain)):
            return True
    return False


def _where(url: str) -> str:
    """Scheme, host and path of a URL: signed query strings stay out of messages and logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _words_of(key: Any) -> str:
    """A JSON key compared loosely: "Moderation Reasons", "moderation_reasons" alike."""
    return " ".join(str(key).replace("_", " ").lower().split())


def _optional_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _optional_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


class BFLClient:
    """A synchronous client for BFL's API.

    Every BFL call carries the `x-key` header; downloads of signed result links do not. Errors
    are the typed `app.bfl.errors` hierarchy and never contain the API key. Pass `transport`
    to route calls elsewhere (tests); `allow_insecure_urls` permits plain http (the emulator).

    The key goes only to the base URL's host and to `allowed_hosts` (each with its subdomains;
    default BFL's own domain): a `polling_url` naming any other host is not followed.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        allow_insecure_urls: bool = False,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        download_deadline_s: float = 120.0,
        allowed_hosts: Iterable[str] | None = None,
    ) -> None:
        if not api_key or not api_key.strip():
            raise ValueError("a BFL API key is required")
        self.base_url = base_url.rstrip("/")
        self.allow_insecure_urls = allow_insecure_urls
        self.max_image_bytes = max_image_bytes
        self.download_deadline_s = download_deadline_s
        self._api_key = api_key
        self._require_secure(self.base_url)
        base_host = httpx.URL(self.base_url).host
        extra = (BFL_DOMAIN,) if allowed_hosts is None else tuple(allowed_hosts)
        #: Hosts (with their subdomains) that may receive the key; the API host always may.
        self.allowed_hosts: tuple[str, ...] = tuple(
            dict.fromkeys(h for h in (base_host, *extra) if _normal_host(h))
        )
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            # Reusing a connection the server is closing turns a POST into "outcome unknown";
            # dropping idle ones sooner than common server keep-alive timeouts avoids that.
            limits=httpx.Limits(keepalive_expiry=2.0),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"BFLClient(base_url={self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- BFL calls -----------------------------------------------------------------------

    def submit(self, model: str, payload: Mapping[str, Any]) -> Submission:
        """POST a (validated) request to `/v1/<model>`.

        Raises `NotSent` (safe to retry) or `RateLimited` (refused, safe to retry) when no
        task exists; `OutcomeUnknown` when BFL may have created one: never resend then.
        """
        if not isinstance(model, str) or not _MODEL_RE.fullmatch(model):
            raise UnsendableRequest("model must be a BFL model name")
        url = f"{self.base_url}/v1/{model}"
        response = self._send("POST", url, operation="submit", json=dict(payload))
        if response.status_code not in (200, 201, 202):
            self._raise_for_status(response, operation="submit")
        try:
            body = response.json()
        except ValueError:
            body = None
        bfl_task_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(bfl_task_id, str) or not bfl_task_id:
            # Accepted (2xx) but without an id we can poll: the task may exist and be charged.
            raise OutcomeUnknown(
                f"BFL answered {response.status_code} to the submission without a task id",
                status_code=response.status_code,
            )
        polling_url = body.get("polling_url")
        submission = Submission(
            id=bfl_task_id,
            polling_url=polling_url if isinstance(polling_url, str) and polling_url else None,
            cost=_optional_decimal(body.get("cost")),
            input_mp=_optional_float(body.get("input_mp")),
            output_mp=_optional_float(body.get("output_mp")),
            raw=body,
            rate_limit=parse_rate_limit_headers(response.headers),
        )
        log.info("bfl task submitted", extra={"bfl_model": model, "bfl_task_id": bfl_task_id})
        return submission

    def poll(self, polling_url: str | None, bfl_task_id: str) -> PollResult:
        """Read a task's state.

        Uses the `polling_url` BFL returned (it may be a regional host); falls back to
        `GET {base}/v1/get_result?id=` when there is none, when it cannot be reached, when it is
        not https (unless allowed), when its host is not the API host or an allowed BFL host
        (the key is never sent there), or when it does not know the task.
        """
        refusal = self._polling_refusal(polling_url) if polling_url else None
        if polling_url and refusal is None:
            try:
                result = self._poll_once(polling_url, None)
            except NotSent as exc:
                log.warning("polling url unreachable, using the base url: %s", exc.message)
            else:
                if result.status is not TaskStatus.NOT_FOUND:
                    return result
        elif polling_url:
            log.warning(
                "polling url %s, using the base url instead: %s", refusal, _where(polling_url)
            )
        return self._poll_once(f"{self.base_url}/v1/get_result", {"id": bfl_task_id})

    def credits(self) -> Decimal:
        """The account's remaining credits (`GET /v1/credits`)."""
        response = self._send("GET", f"{self.base_url}/v1/credits", operation="read")
        if response.status_code != 200:
            self._raise_for_status(response, operation="read")
        body = self._json_object(response)
        balance = _optional_decimal(body.get("credits"))
        if balance is None:
            raise UnexpectedResponse("BFL's credits answer has no credits figure")
        return balance

    def fetch_image(self, url: str) -> FetchedImage:
        """Download a result image from its signed URL (no `x-key`: the URL is the credential).

        Streams with a size cap and an overall deadline; accepts JPEG, PNG and WebP only.
        Raises `ResultUnavailable` for expired links, `ImageTooLarge`, `ImageWrongType`,
        `InsecureURL`, or `ImageFetchFailed` (retryable) for network trouble.
        """
        current = url
        for _hop in range(_MAX_REDIRECTS + 1):
            self._require_secure(current)
            try:
                next_url = self._fetch_once(current)
            except BFLError:
                raise
            except httpx.TimeoutException as exc:
                raise ImageFetchFailed(
                    f"Timed out downloading the result image from {_where(current)}"
                ) from exc
            except (httpx.TransportError, httpx.InvalidURL) as exc:
                raise ImageFetchFailed(
                    f"Could not download the result image from {_where(current)}: "
                    f"{self._scrub(type(exc).__name__ + ': ' + str(exc))}"
                ) from exc
            if isinstance(next_url, FetchedImage):
                return next_url
            current = next_url
        raise ImageFetchFailed("Too many redirects downloading the result image")

    # --- internals -----------------------------------------------------------------------

    def _fetch_once(self, url: str) -> FetchedImage | str:
        """Download one hop: the image, or the URL a redirect points to."""
        started = time.monotonic()
        with self._http.stream("GET", url, headers={"accept": ", ".join(IMAGE_TYPES)}) as resp:
            if resp.is_redirect and "location" in resp.headers:
                return urljoin(url, resp.headers["location"])
            if resp.status_code in (403, 404, 410):
                raise ResultUnavailable(
                    f"The result image link has expired or is gone (HTTP {resp.status_code}); "
                    "BFL keeps results for about 10 minutes",
                    status_code=resp.status_code,
                )
            if resp.status_code != 200:
                raise ImageFetchFailed(
                    f"Downloading the result image failed with HTTP {resp.status_code}",
                    status_code=resp.status_code,
                    safe_to_retry=resp.status_code >= 500 or resp.status_code in (408, 429),
                )
            declared = _media_type(resp.headers.get("content-type"))
            if declared and declared not in IMAGE_TYPES and declared != "application/octet-stream":
                raise ImageWrongType(
                    f"The result link served {declared!r}, not a JPEG, PNG or WebP image"
                )
            length = resp.headers.get("content-length")
            if length and length.isdigit() and int(length) > self.max_image_bytes:
                raise ImageTooLarge(self._too_large_message())
            chunks: list[bytes] = []
            received = 0
            for chunk in resp.iter_bytes(_CHUNK):
                received += len(chunk)
                if received > self.max_image_bytes:
                    raise ImageTooLarge(self._too_large_message())
                if time.monotonic() - started > self.download_deadline_s:
                    raise ImageFetchFailed(
                        f"Downloading the result image took longer than "
                        f"{self.download_deadline_s:g} s"
                    )
                chunks.append(chunk)
        content = b"".join(chunks)
        sniffed = _sniff_image_type(content)
        if sniffed is None:
            raise ImageWrongType(
                f"The result link served {declared or 'untyped'} data that is not an image"
            )
        # The bytes are the truth when the header and the content disagree.
        return FetchedImage(content=content, content_type=sniffed)

    def _too_large_message(self) -> str:
        return f"The result image is larger than the {self.max_image_bytes:,}-byte limit"

    def _poll_once(self, url: str, params: dict[str, str] | None) -> PollResult:
        response = self._send("GET", url, operation="read", params=params)
        if response.status_code == 404:
            return PollResult(status=TaskStatus.NOT_FOUND, message="BFL does not know this task")
        if response.status_code != 200:
            self._raise_for_status(response, operation="read")
        return self._parse_poll(self._json_object(response))

    def _parse_poll(self, body: dict[str, Any]) -> PollResult:
        raw_status = body.get("status")
        key = " ".join(str(raw_status or "").replace("_", " ").replace("-", " ").lower().split())
        # Unknown spellings ("Queued", "Processing", ...) are still running.
        status = _STATUS_BY_KEY.get(key, TaskStatus.PENDING)
        result = body.get("result") if isinstance(body.get("result"), dict) else {}
        assert isinstance(result, dict)
        progress = _optional_float(body.get("progress"))
        if progress is not None and 1.0 < progress <= 100.0:
            progress /= 100.0  # tolerate a percentage
        if progress is not None:
            progress = min(1.0, max(0.0, progress))
        seed_value = result.get("seed")
        seed = (
            seed_value if isinstance(seed_value, int) and not isinstance(seed_value, bool) else None
        )
        sample = result.get("sample")
        details = body.get("details")
        if details is None:
            details = body.get("error")
        reasons = self._moderation_reasons(details)
        explanation = ", ".join(reasons) or self._explanation(details)
        message = self._status_message(status, explanation)
        if status is TaskStatus.READY:
            if not isinstance(sample, str) or not sample:
                raise UnexpectedResponse("BFL reported the task Ready without an image URL")
            return PollResult(
                status, progress, sample, seed, message, details, body, (), explanation or None
            )
        return PollResult(
            status, progress, None, seed, message, details, body, reasons, explanation or None
        )

    def _moderation_reasons(self, details: Any) -> tuple[str, ...]:
        """BFL's `details["Moderation Reasons"]` (a list, or one string), cleaned and bounded."""
        if not isinstance(details, dict):
            return ()
        raw = next((v for k, v in details.items() if _words_of(k) == "moderation reasons"), None)
        items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        reasons: list[str] = []
        for item in items[:10]:
            text = self._scrub(" ".join(str(item).split()))[:200] if item is not None else ""
            if text and text not in reasons:
                reasons.append(text)
        return tuple(reasons)

    def _explanation(self, details: Any) -> str:
        """BFL's words from `details`/`error`: a string, the text of one known key, or all."""
        explanation = ""
        if isinstance(details, str):
            explanation = details
        elif isinstance(details, dict) and details:
            for key in ("error", "message", "detail", "reason"):
                if isinstance(details.get(key), str) and details[key].strip():
                    explanation = details[key]
                    break
            else:
                explanation = "; ".join(f"{k}: {v}" for k, v in details.items())
        elif isinstance(details, list) and details:
            explanation = "; ".join(str(d) for d in details)
        return self._scrub(" ".join(explanation.split()))[:500]

    def _status_message(self, status: TaskStatus, explanation: str) -> str | None:
        base = {
            TaskStatus.REQUEST_MODERATED: "BFL's moderation refused the prompt or input image",
            TaskStatus.CONTENT_MODERATED: "BFL's moderation withheld the generated image",
            TaskStatus.ERROR: "BFL failed to generate the image",
            TaskStatus.NOT_FOUND: "BFL does not know this task (unknown or expired)",
        }.get(status)
        if base is None:
            return explanation or None
        return f"{base}: {explanation}" if explanation else base

    def _send(
        self,
        method: str,
        url: str,
        *,
        operation: Operation,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        where = _where(url)
        log.debug("bfl request %s %s", method, where)
        try:
            response = self._http.request(
                method,
                url,
                json=json,
                params=params,
                headers={"x-key": self._api_key, "accept": "application/json"},
            )
        except _NOT_SENT_ERRORS as exc:
            raise NotSent(
                f"Could not send the request to BFL ({where}): {self._describe(exc)}"
            ) from exc
        except httpx.InvalidURL as exc:
            raise NotSent(f"Invalid BFL URL {where}: {self._describe(exc)}") from exc
        except httpx.TransportError as exc:
            if operation == "submit":
                raise OutcomeUnknown(
                    f"The submission reached BFL but no answer came back ({self._describe(exc)});"
                    " it may have been accepted and charged, so it is not sent again"
                ) from exc
            raise NoResponse(f"No answer from BFL ({where}): {self._describe(exc)}") from exc
        log.debug("bfl response %s %s -> %s", method, where, response.status_code)
        return response

    def _describe(self, exc: BaseException) -> str:
        text = str(exc) or "no details"
        return self._scrub(f"{type(exc).__name__}: {text}")[:300]

    def _raise_for_status(self, response: httpx.Response, *, operation: Operation) -> None:
        status = response.status_code
        message, field_errors = self._error_details(response)
        if status in (400, 422):
            detail = "; ".join(str(e) for e in field_errors) or message
            raise RequestRejected(
                f"BFL rejected the request: {detail}",
                status_code=status,
                field_errors=field_errors,
            )
        if status in (401, 403):
            raise AuthFailed(
                f"BFL refused the API key (HTTP {status}): {message}; check BFL_API_KEY",
                status_code=status,
            )
        if status == 402:
            raise InsufficientCredits(
                f"The BFL account has too few credits for this request: {message}",
                status_code=status,
            )
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is None:
                retry_after = _body_retry_after(response)
            raise RateLimited(
                f"BFL's active-task limit is reached: {message}",
                retry_after=retry_after,
                rate_limit=parse_rate_limit_headers(response.headers),
            )
        if status == 503:
            # "Service unavailable": BFL did not process the request, so no task exists.
            raise ServiceUnavailable(
                f"BFL is unavailable (HTTP 503): {message}", status_code=status
            )
        if status >= 500:
            raise ServerFailed(
                f"BFL had a server error (HTTP {status}): {message}",
                status_code=status,
                safe_to_retry=operation == "read",
            )
        if 400 <= status < 500:
            raise RequestRejected(
                f"BFL refused the request (HTTP {status}): {message}",
                status_code=status,
                field_errors=field_errors,
            )
        raise UnexpectedResponse(
            f"BFL answered with unexpected HTTP {status}",
            status_code=status,
            safe_to_retry=operation == "read",
        )

    def _error_details(self, response: httpx.Response) -> tuple[str, list[FieldError]]:
        """BFL's message and FastAPI-style field errors from an error body."""
        try:
            body: Any = response.json()
        except ValueError:
            text = " ".join(response.text.split())[:300]
            return self._scrub(text) or response.reason_phrase or "no details", []
        field_errors: list[FieldError] = []
        message = ""
        if isinstance(body, dict):
            detail = body.get("detail", body.get("message", body.get("error")))
            if isinstance(detail, list):
                for item in detail:
                    if not isinstance(item, dict):
                        continue
                    loc = item.get("loc")
                    parts = [str(p) for p in loc] if isinstance(loc, list) else []
                    if parts and parts[0] in ("body", "query", "path", "header"):
                        parts = parts[1:]
                    field_errors.append(
                        FieldError(".".join(parts), self._scrub(str(item.get("msg", "invalid"))))
                    )
                message = "; ".join(str(e) for e in field_errors)
            elif detail is not None:
                message = str(detail)
        elif body is not None:
            message = str(body)
        return self._scrub(message)[:500] or response.reason_phrase or "no details", field_errors

    def _json_object(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise UnexpectedResponse(
                f"BFL answered {_where(str(response.url))} with something that is not JSON"
            )
        return body

    def _scrub(self, text: str) -> str:
        # A server or proxy echoing request headers must not carry the key into our errors.
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    def _is_allowed(self, url: str) -> bool:
        scheme = urlsplit(url).scheme.lower()
        return scheme == "https" or (self.allow_insecure_urls and scheme == "http")

    def _polling_refusal(self, url: str) -> str | None:
        """Why the key must not go to this polling URL, or None when it may."""
        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL:
            return "is not a valid URL"
        if not self._is_allowed(url):
            return "is not https"
        if not host_allowed(host, self.allowed_hosts):
            return "is not on the API host or an allowed BFL host (BFL_ALLOWED_HOSTS)"
        return None

    def _require_secure(self, url: str) -> None:
        if not self._is_allowed(url):
            raise InsecureURL(f"Refusing a non-https URL: {_where(url)}")
