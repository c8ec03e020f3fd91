"""Prometheus metrics of the RabbitMQ side, in prometheus_client's default registry.

Rule: every name starts with ``realtime_``; label values come only from closed sets (event types,
``schemas.Reason`` values, a few causes) so cardinality is fixed; all label combinations are
created at import so dashboards see zeros rather than gaps.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from schemas import EVENT_TYPES, Reason

__all__ = [
    "BROKER_CONNECTED",
    "BROKER_LINK_LOSSES",
    "CONSUMER_ACTIVE",
    "CONSUMER_RESTARTS",
    "DEAD_LETTER_FAILURES",
    "DEAD_LETTER_REASONS",
    "ENTRY_FAILURES",
    "EVENTS_CONSUMED",
    "EVENTS_DEAD_LETTERED",
    "EVENTS_DELIVERED",
    "EVENTS_DUPLICATE",
    "EVENT_LATENCY",
    "INTERNAL_ERROR",
    "INVALID",
    "LOG_OFFSET",
    "LOG_RESETS",
    "SEND_FAILED",
    "SEND_FAILURES",
]

INVALID: Final = "invalid"
"""``type`` label of consumed messages that failed validation."""
SEND_FAILED: Final = "send_failed"
"""Dead-letter reason when the hub kept raising for a valid event (see ``EventConsumer``)."""
INTERNAL_ERROR: Final = "internal_error"
"""Dead-letter reason when handling an entry raised (a fault of ours): kept to replay once fixed."""
DEAD_LETTER_REASONS: Final[tuple[str, ...]] = (
    *(reason.value for reason in Reason),
    SEND_FAILED,
    INTERNAL_ERROR,
)

EVENTS_CONSUMED: Final = Counter(
    "realtime_events_consumed",
    "Messages read live from the stream, by event type ('invalid' when validation failed).",
    ["type"],
)
EVENTS_DELIVERED: Final = Counter(
    "realtime_events_delivered",
    "Connections an event was handed to (one event to N connections counts N), by event type.",
    ["type"],
)
EVENTS_DEAD_LETTERED: Final = Counter(
    "realtime_events_dead_lettered",
    "Messages sent to the dead-letter queue, by reason.",
    ["reason"],
)
EVENTS_DUPLICATE: Final = Counter(
    "realtime_events_duplicate",
    "Messages whose id (or body) was already handled within the dedup window: not pushed again.",
)
EVENT_LATENCY: Final = Histogram(
    "realtime_event_latency_seconds",
    "From the AMQP timestamp (else the event's generatedAt) to the hand-off to the hub, by event type.",
    ["type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
SEND_FAILURES: Final = Counter(
    "realtime_event_send_failures",
    "Times handing an event to the hub raised (each attempt counts).",
)
DEAD_LETTER_FAILURES: Final = Counter(
    "realtime_dead_letter_failures",
    "Refused messages whose dead-letter copy could not be published (they stay in the stream).",
)
ENTRY_FAILURES: Final = Counter(
    "realtime_log_entry_failures",
    "Stream entries whose handling raised unexpectedly (logged with the offset and passed over).",
)
LOG_OFFSET: Final = Gauge(
    "realtime_log_offset",
    "Offset of the last entry this instance read from the stream (compare instances to see lag).",
)
LOG_RESETS: Final = Counter(
    "realtime_log_resets",
    "Times this instance lost its place in the stream and made position-tracking clients resume.",
    ["reason"],
)
BROKER_CONNECTED: Final = Gauge(
    "realtime_broker_connected",
    "1 while the AMQP connection to RabbitMQ is open, else 0.",
)
BROKER_LINK_LOSSES: Final = Counter(
    "realtime_broker_link_losses",
    "Broker connections lost, by how: 'heartbeat_timeout' (nothing received for 2 x the heartbeat:"
    " closed from our side) or 'connection_closed' (closed by the broker or the network).",
    ["reason"],
)
CONSUMER_ACTIVE: Final = Gauge(
    "realtime_broker_consuming",
    "1 while a consumer is registered on the stream, else 0.",
)
CONSUMER_RESTARTS: Final = Counter(
    "realtime_consumer_restarts",
    "Consumers re-established after being lost, by what noticed it.",
    ["cause"],
)

for _type in (*EVENT_TYPES, INVALID):
    EVENTS_CONSUMED.labels(type=_type)
for _type in EVENT_TYPES:
    EVENTS_DELIVERED.labels(type=_type)
    EVENT_LATENCY.labels(type=_type)
for _reason in DEAD_LETTER_REASONS:
    EVENTS_DEAD_LETTERED.labels(reason=_reason)
for _cause in ("cancelled", "reconnected", "channel_closed", "watchdog", "recreated", "heartbeat_timeout"):
    CONSUMER_RESTARTS.labels(cause=_cause)
for _reason in ("heartbeat_timeout", "connection_closed"):
    BROKER_LINK_LOSSES.labels(reason=_reason)
for _reason in ("gap", "recreated"):
    LOG_RESETS.labels(reason=_reason)
