"""Structured logs for every process: JSON off a terminal, readable on one, secrets redacted.

structlog renders both its own events and the standard library's records (uvicorn, Celery,
httpx, the BFL client), so every line carries the same context: the request id in the web app,
the Celery task and job id in the worker. A redaction pass runs last, on the finished event, so
no processor or library can put the BFL key, a session cookie, a bearer token or a link token
(invite, webhook) into a line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from app.settings import Settings, get_settings

REDACTED = "[redacted]"
_HANDLER_NAME = "studio-structlog"

#: Keys whose values are credentials whatever they hold.
_SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-key",
        "x-csrf-token",
        "password",
        "current_password",
        "new_password",
        "api_key",
        "bfl_api_key",
        "secret_key",
        "s3_secret_access_key",
        "metrics_token",
        "token",
        "csrf_token",
    }
)
#: Credentials recognisable by shape, wherever they appear in a line.
_SECRET_PATTERNS = (
    # Session cookies (`__Host-studio_session=...`, `studio_session=...`).
    (re.compile(r"((?:__Host-)?studio_session=)[^;,\s\"']+"), r"\1" + REDACTED),
    # Authorization headers and bearer tokens.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # The x-key header as text (`x-key: ...`, `'x-key': '...'`).
    (re.compile(r"(?i)(x-key['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"), r"\1" + REDACTED),
    # Personal API tokens of the studio.
    (re.compile(r"\bfts_[A-Za-z0-9_-]{8,}"), REDACTED),
    # Link tokens in paths and URLs: invite links, BFL webhook URLs, password-reset links.
    (re.compile(r"(/invite/)[^/?#\s\"',;]+"), r"\1" + REDACTED),
    (re.compile(r"(/bfl/webhook/[^/?#\s\"',;]+/)[^/?#\s\"',;]+"), r"\1" + REDACTED),
    (re.compile(r"(/(?:password-)?reset/)[^/?#\s\"',;]+"), r"\1" + REDACTED),
    # Token-like query parameters (`?token=`, `&invite_token=`, `?key=`, `?signature=` ...).
    (
        re.compile(
            r"(?i)([?&](?:[a-z_]*token|[a-z_]*key|[a-z_]*secret|password|sig|signature|code)=)"
            r"[^&#\s\"']+"
        ),
        r"\1" + REDACTED,
    ),
)
#: Path parameters that carry a credential: their values never reach a log line.
SECRET_PATH_PARAMS = frozenset({"token", "invite_token", "reset_token", "secret"})


def known_secrets(settings: Settings) -> list[str]:
    """Secret values from the settings; longest first so overlapping secrets redact fully."""
    values = [
        settings.BFL_API_KEY.get_secret_value() if settings.BFL_API_KEY else "",
        settings.SECRET_KEY.get_secret_value(),
        settings.S3_SECRET_ACCESS_KEY.get_secret_value() if settings.S3_SECRET_ACCESS_KEY else "",
        settings.METRICS_TOKEN.get_secret_value() if settings.METRICS_TOKEN else "",
    ]
    # Very short values would blank ordinary words; a real secret is never that short.
    return sorted({v for v in values if len(v) >= 6}, key=len, reverse=True)


class Redactor:
    """A structlog processor that scrubs credentials from every value of an event."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s for s in secrets if s]

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def _clean(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if depth > 6:
            return value
        if isinstance(value, Mapping):
            return {
                k: REDACTED if _is_secret_key(k) else self._clean(v, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(v, depth + 1) for v in value]
        if isinstance(value, bytes):
            return self.scrub(value.decode("utf-8", "replace"))
        if value is None or isinstance(value, bool | int | float):
            return value
        # Anything else is rendered by repr/str later: scrub that text now.
        return self.scrub(str(value))

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        for key in list(event.keys()):
            if _is_secret_key(key):
                event[key] = REDACTED
            else:
                event[key] = self._clean(event[key])
        return event


def redact_url_text(text: str) -> str:
    """A path or query string with link tokens and token-like parameters redacted."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and key.lower() in _SECRET_KEYS


def _drop_color_message(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    # uvicorn duplicates its message with ANSI colours for its own formatter.
    event.pop("color_message", None)
    return event


def _add_process(process: str) -> Processor:
    def add(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        event.setdefault("process", process)
        return event

    return add


def _isatty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())


def wants_json(settings: Settings, stream: Any = None) -> bool:
    """JSON unless LOG_FORMAT says console, or is auto and the stream is a terminal."""
    if settings.LOG_FORMAT == "json":
        return True
    if settings.LOG_FORMAT == "console":
        return False
    return not _isatty(stream if stream is not None else sys.stderr)


_configured_for: str | None = None


def configure_logging(process: str, *, force: bool = False, stream: Any = None) -> None:
    """Route structlog and the standard library through one redacting renderer.

    `process` names this process in every line ("web", "worker", "beat", ...). Safe to call
    more than once; later calls are no-ops unless `force`.
    """
    global _configured_for
    if _configured_for is not None and not force:
        return
    settings = get_settings()
    stream = stream if stream is not None else sys.stderr
    as_json = wants_json(settings, stream)
    redact = Redactor(known_secrets(settings))

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_process(process),
        _drop_color_message,
    ]
    renderer: Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(stream))

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text first, so the redaction below sees them too.
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )
    _install_root_handler(formatter, stream, settings.LOG_LEVEL)
    _configured_for = process


def _install_root_handler(formatter: logging.Formatter, stream: Any, level: str) -> None:
    """Make `formatter` on `stream` the root logger's one studio handler; quiet chatty libraries."""
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())

    # Servers and libraries log through the root handler, not handlers of their own.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    # httpx logs every URL at INFO, and BFL's result URLs are signed credentials.
    for name in ("httpx", "httpcore", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(name).setLevel(logging.WARNING)


def bind_context(**values: Any) -> None:
    """Add fields to every line this task or request logs from now on (e.g. `job_id=`)."""
    structlog.contextvars.bind_contextvars(**{k: str(v) for k, v in values.items()})


def clear_context() -> None:
    structlog.contextvars.clear_contextvars()


def current_context() -> MutableMapping[str, Any]:
    return structlog.contextvars.get_contextvars()


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
