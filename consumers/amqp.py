"""The parts of an AMQP stream delivery the consumer uses, read once (aio-pika's message is lazy)."""

from __future__ import annotations

from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelInvalidStateError

from consumers.handling import OFFSET_HEADER, Delivery

__all__ = ["delivery_of", "from_closed_channel", "message_fields"]


def delivery_of(message: AbstractIncomingMessage) -> Delivery | None:
    """The ``Delivery`` of a stream message; None without an integer ``x-stream-offset`` header."""
    headers = message.headers or {}
    offset = headers.get(OFFSET_HEADER)
    if not isinstance(offset, int) or isinstance(offset, bool):
        return None
    return Delivery(
        offset=offset,
        body=message.body,
        exchange=message.exchange or "",
        routing_key=message.routing_key or "",
        message_id=message.message_id,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        timestamp=message.timestamp,
        headers=dict(headers),
    )


def from_closed_channel(message: AbstractIncomingMessage) -> bool:
    """Delivered on a channel that has closed since: the re-attached consumer reads it again."""
    try:
        channel = message.channel
    except ChannelInvalidStateError:
        return True
    return bool(getattr(channel, "is_closed", False))


def message_fields(message: AbstractIncomingMessage, delivery: Delivery | None = None) -> dict[str, Any]:
    """Log fields naming a message (never its body)."""
    fields: dict[str, Any] = {"messageId": message.message_id, "routingKey": message.routing_key}
    if delivery is not None:
        fields["offset"] = delivery.offset
    return fields
