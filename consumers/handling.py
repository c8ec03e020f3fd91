"""One log entry → what to do with it, as a pure function: deliver, dead-letter, skip, or a marker.

``classify`` sees a ``Delivery`` (the parts of an AMQP message it needs, so it is tested without a
broker) and returns an ``Outcome``; it sends, acknowledges and publishes nothing. The consumer acts
on the outcome (``consumers.consumer``) and settles it (``consumers.settle``).

Order of checks, cheapest first: our own markers; a message id already handled within the dedup
window (a publisher retry, or the same event read twice); content headers and body against the
event contract (``schemas.parse_event``); then routing (``consumers.routes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from schemas import Event, EventValidationError, check_content_headers, parse_event
from schemas.events import RecommendationReady, parse_timestamp
from schemas.log import LogRecord, entry_check

from .dedup import DuplicateFilter, message_key
from .routes import groups_for

__all__ = [
    "MARKER_HEADER",
    "OFFSET_HEADER",
    "DeadLetter",
    "Deliver",
    "Delivery",
    "Duplicate",
    "Marker",
    "Outcome",
    "classify",
]

OFFSET_HEADER: Final = "x-stream-offset"
"""Where RabbitMQ puts a stream message's offset (an integer header on every delivery)."""
MARKER_HEADER: Final = "x-realtime-marker"
"""Set on the markers an instance writes to the log to learn where "now" is; not events."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What classification needs from one message read from the stream."""

    offset: int
    body: bytes
    exchange: str
    routing_key: str
    message_id: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    timestamp: datetime | None = None
    headers: dict[str, Any] | None = None
    check: str = field(init=False)
    """The entry's check (``schemas.log.entry_check``): computed once, read several times per entry."""

    def __post_init__(self) -> None:
        check = entry_check(
            self.body, message_id=self.message_id, exchange=self.exchange, routing_key=self.routing_key
        )
        object.__setattr__(self, "check", check)

    @property
    def marker(self) -> str | None:
        value = (self.headers or {}).get(MARKER_HEADER)
        return value if isinstance(value, str) else None

    def record(self, **event: Any) -> LogRecord:
        """The log record of this entry (an event's fields as keywords, none for a non-event).

        Every entry — markers, dead letters and duplicates too — carries its AMQP ``timestamp`` when
        it has one: the history ages entries by it, and one entry stamped with the time it was
        *read* (during a restart's prefill, long after it was written) would hold back the
        eviction of everything behind it for a whole window.
        """
        event.setdefault("published_at", _epoch(self.timestamp))
        return LogRecord(offset=self.offset, check=self.check, **event)


@dataclass(frozen=True, slots=True)
class Deliver:
    event: Event
    groups: tuple[str, ...]
    key: str
    published_at: float | None

    def record(self, delivery: Delivery) -> LogRecord:
        return delivery.record(
            target=self.event.type,
            groups=self.groups,
            payload=self.event.to_client_payload(),
            published_at=self.published_at,
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    detail: str
    key: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    key: str


@dataclass(frozen=True, slots=True)
class Marker:
    token: str


Outcome = Deliver | DeadLetter | Duplicate | Marker


def classify(delivery: Delivery, *, duplicates: DuplicateFilter, max_event_bytes: int) -> Outcome:
    """Decide what ``delivery`` is; remembers nothing (the caller records a key once it acted on it)."""
    marker = delivery.marker
    if marker is not None:
        return Marker(marker)
    key = message_key(delivery.message_id, delivery.body)
    if duplicates.seen(key):
        return Duplicate(key)
    try:
        check_content_headers(delivery.content_type, delivery.content_encoding)
        event = parse_event(delivery.body, max_bytes=max_event_bytes)
    except EventValidationError as error:
        return DeadLetter(error.reason.value, error.detail, key)
    return Deliver(event, groups_for(event), key, _published_at(delivery, event))


def _published_at(delivery: Delivery, event: Event) -> float | None:
    """Epoch seconds of publication: the AMQP ``timestamp`` (1 s resolution), else ``generatedAt``."""
    sent_at = delivery.timestamp
    if sent_at is None and isinstance(event, RecommendationReady):
        sent_at = parse_timestamp(event.generated_at)
    return _epoch(sent_at)


def _epoch(sent_at: object) -> float | None:
    if not isinstance(sent_at, datetime):
        return None
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    return sent_at.timestamp()
