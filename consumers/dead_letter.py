"""The dead letter we publish for a refused message: the original body and properties plus why.

Headers added (values are strings unless noted):

==================================  ===========================================================
``x-realtime-reason``               a ``schemas.Reason`` value, ``send_failed`` or ``internal_error``
``x-realtime-error``                one-line explanation (validation error text), ≤ 1000 chars
``x-realtime-instance``             ``INSTANCE_ID`` of the instance that refused it
``x-realtime-queue``                the stream it was read from
``x-realtime-original-exchange``    exchange it was published to
``x-realtime-original-routing-key`` routing key it was published with
``x-realtime-redelivered``          bool: the delivery's redelivered flag (always false on a stream)
``x-realtime-dead-lettered-at``     ISO 8601 UTC time of the decision
==================================  ===========================================================

When publishing the dead letter fails it is counted and logged (``consumers.settle``); the original
stays in the stream, which cannot reject it anyway.

Rule: the dead letter keeps everything a person needs to replay it (body, ``message_id``,
``timestamp``, ``content_type``, original headers) and drops what would make the publish fail or
the dead letter vanish: ``user_id`` (the broker checks it against *our* user) and ``expiration``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractIncomingMessage

__all__ = [
    "DEAD_LETTERED_AT_HEADER",
    "ERROR_HEADER",
    "INSTANCE_HEADER",
    "ORIGINAL_EXCHANGE_HEADER",
    "ORIGINAL_ROUTING_KEY_HEADER",
    "QUEUE_HEADER",
    "REASON_HEADER",
    "REDELIVERED_HEADER",
    "dead_letter_message",
]

REASON_HEADER: Final = "x-realtime-reason"
ERROR_HEADER: Final = "x-realtime-error"
INSTANCE_HEADER: Final = "x-realtime-instance"
QUEUE_HEADER: Final = "x-realtime-queue"
ORIGINAL_EXCHANGE_HEADER: Final = "x-realtime-original-exchange"
ORIGINAL_ROUTING_KEY_HEADER: Final = "x-realtime-original-routing-key"
REDELIVERED_HEADER: Final = "x-realtime-redelivered"
DEAD_LETTERED_AT_HEADER: Final = "x-realtime-dead-lettered-at"
_MAX_ERROR: Final = 1000


def dead_letter_message(
    message: AbstractIncomingMessage,
    *,
    reason: str,
    detail: str,
    instance_id: str,
    queue: str,
    now: datetime | None = None,
) -> Message:
    """A persistent copy of ``message`` annotated with why it was refused."""
    headers = dict(message.headers or {})
    headers.update(
        {
            REASON_HEADER: reason,
            ERROR_HEADER: detail if len(detail) <= _MAX_ERROR else detail[: _MAX_ERROR - 1] + "…",
            INSTANCE_HEADER: instance_id,
            QUEUE_HEADER: queue,
            ORIGINAL_EXCHANGE_HEADER: message.exchange or "",
            ORIGINAL_ROUTING_KEY_HEADER: message.routing_key or "",
            REDELIVERED_HEADER: bool(message.redelivered),
            DEAD_LETTERED_AT_HEADER: (now or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        }
    )
    return Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )
