"""Structured logging (structlog) for the service and the libraries under it.

JSON lines in production, coloured console lines in development; the standard library's loggers
(aiohttp, aio-pika) go through the same renderer. Rule: a token never reaches a log line — the
access log redacts ``access_token`` (and the connection token ``id``) from query strings.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from config.settings import LogFormat

__all__ = ["RedactingAccessLogger", "configure_logging", "redact_query"]

_SECRET_QUERY_KEYS = frozenset({"access_token", "id"})
_access = structlog.get_logger("aiohttp.access")


def redact_query(query_string: str) -> str:
    """``a=1&access_token=xyz`` → ``a=1&access_token=***`` (keys compared case-insensitively)."""
    if not query_string:
        return query_string
    parts = []
    for pair in query_string.split("&"):
        key, sep, _ = pair.partition("=")
        parts.append(f"{key}=***" if sep and key.lower() in _SECRET_QUERY_KEYS else pair)
    return "&".join(parts)


def configure_logging(level: str = "INFO", fmt: LogFormat = LogFormat.JSON) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        # filter_by_level first: a disabled call (connection.* at INFO under LOG_LEVEL=WARNING) costs a
        # level check, not the whole processor chain.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aio-pika/aiormq are chatty at INFO about every channel; keep their warnings.
    for noisy in ("aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp access log as structured events, without secrets in the query string."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        _access.info(
            "http.access",
            method=request.method,
            path=request.path,
            query=redact_query(request.query_string),
            status=response.status,
            durationMs=round(time * 1000, 1),
            remote=request.remote,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
