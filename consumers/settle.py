"""Settling what the consumer read: credit back to the stream, dead letters with confirms.

Stream acknowledgements are only credit (https://www.rabbitmq.com/docs/streams, "Consuming"): they
let the broker send more, they do not remove anything, and ``basic.reject``/``basic.nack`` are not
allowed on a stream — the broker closes the whole connection — so nothing here ever rejects.

A dead letter is a copy of the refused message, published with publisher confirms to
``DEAD_LETTER_EXCHANGE`` with headers saying why (``consumers.dead_letter``). The original stays in
the stream until retention removes it, so a failed dead-letter publish loses nothing: it is
counted (``realtime_dead_letter_failures_total``), logged, and the consumer goes on.
"""

from __future__ import annotations

from typing import Any, Final

import structlog
from aio_pika.abc import AbstractExchange
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, ChannelInvalidStateError

from consumers import metrics
from consumers.amqp import DeliveredMessage, incoming
from consumers.dead_letter import dead_letter_message

__all__ = ["Settler"]

log = structlog.get_logger(__name__)

_TRANSIENT: Final = (*CONNECTION_EXCEPTIONS, TimeoutError)


class Settler:
    """Acks (as credit) and dead letters for one consumer; the exchange handle is set per connection."""

    def __init__(self, *, instance_id: str, source: str, timeout: float) -> None:
        self._instance_id = instance_id
        self._source = source
        self._timeout = timeout
        self.dead_letter_exchange: AbstractExchange | None = None

    async def credit(self, message: DeliveredMessage) -> None:
        """Acknowledge ``message`` and every earlier delivery on its channel, so the broker sends more."""
        tag = message.delivery_tag
        if tag is None:
            return  # consumed without acknowledgements: nothing to credit
        try:
            await message.channel.basic_ack(tag, multiple=True)
        except _TRANSIENT as error:
            # The channel is gone: a new consumer re-attaches at the next offset; nothing is lost.
            log.debug("consumer.credit_failed", error=f"{type(error).__name__}: {error}")

    async def dead_letter(self, message: DeliveredMessage, *, reason: str, detail: str, bound: Any) -> bool:
        """Publish the annotated copy and wait for the broker's confirm; False if that failed."""
        bound = bound.bind(reason=reason, error=detail)
        outgoing = dead_letter_message(
            incoming(message), reason=reason, detail=detail, instance_id=self._instance_id, queue=self._source
        )
        exchange = self.dead_letter_exchange
        try:
            if exchange is None:
                raise ChannelInvalidStateError("dead-letter exchange not declared")
            await exchange.publish(
                outgoing, routing_key=message.routing_key or "", mandatory=True, timeout=self._timeout
            )
        except _TRANSIENT as error:
            metrics.DEAD_LETTER_FAILURES.inc()
            bound.warning(
                "message.dead_letter_failed",
                publishError=f"{type(error).__name__}: {error}",
                note="the message stays in the stream; it is not delivered to clients",
            )
            return False
        metrics.EVENTS_DEAD_LETTERED.labels(reason=reason).inc()
        bound.warning("message.dead_lettered")
        return True
