"""The stream consumer's side of AMQP: registering it, and the parts of a delivery it uses.

The consumer is registered on aio-pika's underlying aiormq channel and gets aiormq's
``DeliveredMessage`` as it was parsed off the wire. aio-pika's ``Queue.consume`` would wrap every
delivery in an ``IncomingMessage`` (a dozen checked attribute sets) and start the callback in a
second task: 77 against 52 µs of CPU per delivery on this stack, a third of what the consumer costs
per event (issue 12, ``bench/NOTES.md``). Only a dead letter, which copies every property, makes
aio-pika's message (``incoming``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from aio_pika.abc import AbstractQueue
from aio_pika.message import IncomingMessage
from aiormq.abc import DeliveredMessage

from consumers.handling import OFFSET_HEADER, Delivery

__all__ = [
    "DeliveredMessage",
    "consume",
    "delivery_of",
    "from_closed_channel",
    "incoming",
    "message_fields",
]


async def consume(
    queue: AbstractQueue,
    callback: Callable[[DeliveredMessage], Coroutine[Any, Any, None]],
    *,
    arguments: dict[str, Any],
    timeout: float,
) -> str:
    """Start consuming ``queue`` with ``callback`` called per delivery, in delivery order; the tag."""
    channel = await queue.channel.get_underlay_channel()
    ok = await channel.basic_consume(
        queue=queue.name, consumer_callback=callback, arguments=arguments, timeout=timeout
    )
    if ok.consumer_tag is None:  # pamqp types it optional; a broker always names the consumer
        raise RuntimeError(f"the broker named no consumer for {queue.name!r}")
    return ok.consumer_tag


def delivery_of(message: DeliveredMessage) -> Delivery | None:
    """The ``Delivery`` of a stream message; None without an integer ``x-stream-offset`` header."""
    properties = message.header.properties
    headers = properties.headers or {}
    offset = headers.get(OFFSET_HEADER)
    if not isinstance(offset, int) or isinstance(offset, bool):
        return None
    return Delivery(
        offset=offset,
        body=message.body,
        exchange=message.exchange or "",
        routing_key=message.routing_key or "",
        message_id=properties.message_id,
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        timestamp=properties.timestamp,
        headers=dict(headers),
    )


def from_closed_channel(message: DeliveredMessage) -> bool:
    """Delivered on a channel that has closed since: the re-attached consumer reads it again."""
    return bool(message.channel.is_closed)


def incoming(message: DeliveredMessage) -> IncomingMessage:
    """aio-pika's full message, for what copies every property (a dead letter)."""
    return IncomingMessage(message, no_ack=False)


def message_fields(message: DeliveredMessage, delivery: Delivery | None = None) -> dict[str, Any]:
    """Log fields naming a message (never its body)."""
    fields: dict[str, Any] = {
        "messageId": message.header.properties.message_id,
        "routingKey": message.routing_key,
    }
    if delivery is not None:
        fields["offset"] = delivery.offset
    return fields
