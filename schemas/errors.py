"""Why an event body was refused: one exception type, with a short reason label and a readable detail.

Rule: ``reason`` is one of the few fixed labels in ``Reason`` (safe as a Prometheus label and a
dead-letter header value); ``detail`` explains the problem in one line and never repeats the body,
so it can go into logs and dead-letter headers without leaking what the producer sent.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["EventValidationError", "Reason"]


class Reason(StrEnum):
    """Why a message was refused. Values are stable: dashboards and dead-letter consumers use them."""

    EMPTY = "empty"
    """The body has no bytes."""
    TOO_LARGE = "too_large"
    """The body is larger than the configured limit (``MAX_EVENT_BYTES``); refused before parsing."""
    CONTENT_TYPE = "content_type"
    """The AMQP ``content_type`` is set and is not ``application/json``."""
    CONTENT_ENCODING = "content_encoding"
    """The AMQP ``content_encoding`` is set (e.g. gzip); the contract is plain UTF-8 JSON."""
    NOT_UTF8 = "not_utf8"
    """The body is not valid UTF-8."""
    NOT_JSON = "not_json"
    """The body is not one JSON document."""
    NOT_OBJECT = "not_object"
    """The body is JSON but not a JSON object."""
    UNKNOWN_TYPE = "unknown_type"
    """The body's ``type`` is not an event this service knows."""
    SCHEMA = "schema"
    """The body is an object of a known ``type`` (or has no ``type``) that breaks the contract."""


class EventValidationError(ValueError):
    """The producer sent a body that does not meet the event contract; the fault is the producer's."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[EventValidationError], tuple[Reason, str]]:
        return (type(self), (self.reason, self.detail))
