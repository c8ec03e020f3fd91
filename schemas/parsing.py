"""Bytes from the broker → one validated event, or ``EventValidationError`` saying why not.

Rule: nothing else escapes. Whatever the producer sent — empty, huge, binary, deeply nested,
a JSON scalar, an unknown ``type`` — the result is an ``Event`` or an ``EventValidationError``
whose ``reason`` is one of ``Reason``. Checks run cheapest first, and the size limit is applied
before any parsing so an oversized body costs nothing but its length.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.errors import EventValidationError, Reason
from schemas.events import DEFAULT_MAX_EVENT_BYTES, EVENT_TYPES, Event, EventEnvelope

__all__ = ["JSON_CONTENT_TYPE", "check_content_headers", "parse_event"]

JSON_CONTENT_TYPE: Final = "application/json"
_MAX_DETAIL: Final = 500
_MAX_ECHO: Final = 40


def check_content_headers(content_type: str | None, content_encoding: str | None = None) -> None:
    """Refuse AMQP ``content_type``/``content_encoding`` other than plain JSON.

    The contract: the body is UTF-8 with ``content_type`` ``application/json``. A missing content type is
    accepted (many producers omit it; the body is validated anyway); a ``charset`` parameter must be
    UTF-8.
    """
    if content_encoding and content_encoding.strip().lower() not in ("identity", "utf-8", "utf8"):
        raise EventValidationError(
            Reason.CONTENT_ENCODING, f"content_encoding {_echo(content_encoding)} is not supported"
        )
    if not content_type:
        return
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    if media_type != JSON_CONTENT_TYPE:
        raise EventValidationError(
            Reason.CONTENT_TYPE, f"content_type {_echo(content_type)} is not {JSON_CONTENT_TYPE}"
        )
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            raise EventValidationError(Reason.CONTENT_TYPE, f"charset {_echo(value)} is not utf-8")


def parse_event(body: bytes, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Event:
    """Validate one message body against the event contract."""
    if not body:
        raise EventValidationError(Reason.EMPTY, "body is empty")
    if len(body) > max_bytes:
        raise EventValidationError(Reason.TOO_LARGE, f"body has {len(body)} bytes; the limit is {max_bytes}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise EventValidationError(Reason.NOT_UTF8, f"invalid UTF-8 at byte {error.start}") from None
    document = _load_json(text)
    if not isinstance(document, Mapping):
        raise EventValidationError(
            Reason.NOT_OBJECT, f"body is a JSON {type(document).__name__}, not an object"
        )
    if "type" not in document:
        raise EventValidationError(Reason.SCHEMA, "type: field required")
    event_type = document["type"]
    if event_type not in EVENT_TYPES:
        raise EventValidationError(
            Reason.UNKNOWN_TYPE, f"type {_echo(event_type)} is not one of {', '.join(EVENT_TYPES)}"
        )
    try:
        return EventEnvelope.model_validate(document).root
    except ValidationError as error:
        raise EventValidationError(Reason.SCHEMA, _describe(error.errors(include_url=False))) from None


def _load_json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        first_error = f"{error.msg} at char {error.pos}"
    # orjson refuses integers beyond 64 bits, which JSON allows (a producer may add such a field;
    # unknown fields must not make a body invalid). The stdlib parser takes them; it must still
    # refuse what is not JSON (NaN, Infinity) and survive deep nesting.
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise EventValidationError(Reason.NOT_JSON, f"not JSON: {first_error}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _describe(errors: list[ErrorDetails]) -> str:
    """``jobId: must be a UUID …; endUtc: …`` — field paths and messages, never the offending input."""
    parts: list[str] = []
    for error in errors:
        # The first element of a discriminated union's path is the tag (the event type).
        location = [str(part) for part in error["loc"][1:]]
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{'.'.join(location)}: {message}" if location else message)
    detail = "; ".join(parts)
    return detail if len(detail) <= _MAX_DETAIL else detail[: _MAX_DETAIL - 1] + "…"


def _echo(value: object) -> str:
    """A short, quoted rendering of a producer-supplied value for an error detail."""
    text = repr(value)
    return text if len(text) <= _MAX_ECHO else text[: _MAX_ECHO - 1] + "…"
