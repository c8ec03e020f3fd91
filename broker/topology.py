"""The broker entities this service owns, and declaring them idempotently.

Topology (the README's "Broker contract"):

- ``RECOMMENDATIONS_EXCHANGE`` and ``ASSIGNMENTS_EXCHANGE``: durable **topic** exchanges. Producers
  publish ``RecommendationReady`` with routing keys ``recommendation.ready.{region}`` and
  ``JobAssigned`` with ``job.assigned.{region}``; routing keys are advisory — we bind with ``#``.
- ``STREAM_NAME``: one durable RabbitMQ **stream** (``x-queue-type: stream``), bound to both
  exchanges with ``#``: the shared log every instance reads, so an event has one offset everywhere
  (https://www.rabbitmq.com/docs/streams). Retention by age (``STREAM_MAX_AGE`` → ``x-max-age``) and
  size (``STREAM_MAX_BYTES`` → ``x-max-length-bytes``), applied per segment
  (``STREAM_SEGMENT_BYTES`` → ``x-stream-max-segment-size-bytes``). The broker compares all three on
  every declaration, ``x-max-age`` as a string: change them only by recreating the stream.
- One tiny durable queue per instance, ``{POSITION_QUEUE_PREFIX}{INSTANCE_ID}``, holding one message:
  the last position that instance delivered (``x-max-length: 1`` with ``drop-head``), so that a
  restarted instance knows which events were published while it was away; it expires
  (``QUEUE_EXPIRES_MS``) once the instance is gone for good.
- ``DEAD_LETTER_EXCHANGE`` (durable **fanout**) and ``DEAD_LETTER_QUEUE`` (durable, bound to it):
  every message this service refuses ends up there, from any instance, whatever its routing key.

Rule: declaring is idempotent and safe to repeat on every (re)connect. A declaration the broker
refuses because the entity exists with other properties (406 PRECONDITION_FAILED) or because we
lack permission (403) becomes one ``BrokerConfigurationError`` naming the entity and the setting —
it is a configuration problem, and retrying would only repeat it.

``QUEUE_TYPE`` applies to the service's own queues (dead letters, positions): ``quorum`` on a
cluster. Streams cannot be exclusive, auto-delete or non-durable, and need a per-consumer prefetch
(all of which this module and the consumer respect).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import aiormq.exceptions
from aio_pika import ExchangeType
from aio_pika.abc import AbstractRobustChannel, AbstractRobustExchange, AbstractRobustQueue

from broker.errors import BrokerConfigurationError
from config.settings import QueueType, Settings

__all__ = [
    "BIND_ALL",
    "DeclaredTopology",
    "Topology",
    "declare_event_exchanges",
    "declare_topology",
    "stream_arguments",
]

BIND_ALL: Final = "#"
_MAX_NAME_BYTES: Final = 255  # AMQP 0-9-1 short string
_T = TypeVar("_T")


def stream_arguments(*, max_age: str, max_bytes: int, segment_bytes: int) -> dict[str, Any]:
    """A stream's declaration arguments: its type and retention (RabbitMQ refuses a redeclaration
    that changes them)."""
    return {
        "x-queue-type": "stream",
        "x-max-age": max_age,
        "x-max-length-bytes": max_bytes,
        "x-stream-max-segment-size-bytes": segment_bytes,
    }


@dataclass(frozen=True, slots=True)
class Topology:
    """Names and arguments of every entity, derived from settings in one place."""

    recommendations_exchange: str
    assignments_exchange: str
    dead_letter_exchange: str
    dead_letter_queue: str
    stream: str
    stream_max_age: str
    stream_max_bytes: int
    stream_segment_bytes: int
    position_queue: str
    queue_type: QueueType
    queue_expires_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        topology = cls(
            recommendations_exchange=settings.recommendations_exchange,
            assignments_exchange=settings.assignments_exchange,
            dead_letter_exchange=settings.dead_letter_exchange,
            dead_letter_queue=settings.dead_letter_queue,
            stream=settings.stream_name,
            stream_max_age=settings.stream_max_age,
            stream_max_bytes=settings.stream_max_bytes,
            stream_segment_bytes=settings.stream_segment_bytes,
            position_queue=f"{settings.position_queue_prefix}{settings.instance_id}",
            queue_type=settings.queue_type,
            queue_expires_ms=settings.queue_expires_ms,
        )
        for setting, name in (
            ("STREAM_NAME", topology.stream),
            ("POSITION_QUEUE_PREFIX + INSTANCE_ID", topology.position_queue),
            ("RECOMMENDATIONS_EXCHANGE", topology.recommendations_exchange),
            ("ASSIGNMENTS_EXCHANGE", topology.assignments_exchange),
            ("DEAD_LETTER_EXCHANGE", topology.dead_letter_exchange),
            ("DEAD_LETTER_QUEUE", topology.dead_letter_queue),
        ):
            if not name or len(name.encode()) > _MAX_NAME_BYTES or name.startswith("amq."):
                raise BrokerConfigurationError(
                    f"{setting}: {name!r} is not a usable name (1-255 bytes, not starting with 'amq.')"
                )
        return topology

    @property
    def event_exchanges(self) -> tuple[str, str]:
        return (self.recommendations_exchange, self.assignments_exchange)

    def stream_arguments(self) -> dict[str, Any]:
        return stream_arguments(
            max_age=self.stream_max_age,
            max_bytes=self.stream_max_bytes,
            segment_bytes=self.stream_segment_bytes,
        )

    def position_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": self.queue_type.value,
            "x-expires": self.queue_expires_ms,
            "x-max-length": 1,
            "x-overflow": "drop-head",
        }

    def dead_letter_queue_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": self.queue_type.value}


@dataclass(frozen=True, slots=True)
class DeclaredTopology:
    """Handles on the declared entities, bound to the channel that declared them."""

    stream: AbstractRobustQueue
    position_queue: AbstractRobustQueue
    dead_letter_exchange: AbstractRobustExchange


async def declare_event_exchanges(
    channel: AbstractRobustChannel, names: Sequence[str], *, timeout: float, robust: bool
) -> dict[str, AbstractRobustExchange]:
    """Declare the event exchanges (durable topic); the publisher needs only these."""
    exchanges: dict[str, AbstractRobustExchange] = {}
    for name in names:
        exchanges[name] = await _guard(
            f"exchange {name!r}",
            "its type/durability (expected a durable topic exchange)",
            channel.declare_exchange(name, ExchangeType.TOPIC, durable=True, timeout=timeout, robust=robust),
        )
    return exchanges


async def declare_topology(
    channel: AbstractRobustChannel, topology: Topology, *, timeout: float
) -> DeclaredTopology:
    """Declare and bind everything the consumer needs; safe to repeat.

    Entities are declared with ``robust=False``: ``EventConsumer`` re-declares them itself after
    every reconnect, consumer cancellation or channel loss (one code path for all three), so
    aio-pika's own restore must not race it.
    """
    await declare_event_exchanges(channel, topology.event_exchanges, timeout=timeout, robust=False)
    dead_letter_exchange = await _guard(
        f"exchange {topology.dead_letter_exchange!r}",
        "DEAD_LETTER_EXCHANGE (expected a durable fanout exchange)",
        channel.declare_exchange(
            topology.dead_letter_exchange, ExchangeType.FANOUT, durable=True, timeout=timeout, robust=False
        ),
    )
    dead_letter_queue = await _guard(
        f"queue {topology.dead_letter_queue!r}",
        "DEAD_LETTER_QUEUE / QUEUE_TYPE",
        channel.declare_queue(
            topology.dead_letter_queue,
            durable=True,
            arguments=topology.dead_letter_queue_arguments(),
            timeout=timeout,
            robust=False,
        ),
    )
    await _guard(
        f"binding of {topology.dead_letter_queue!r} to {topology.dead_letter_exchange!r}",
        "DEAD_LETTER_QUEUE",
        dead_letter_queue.bind(dead_letter_exchange, routing_key="", timeout=timeout, robust=False),
    )
    stream = await _guard(
        f"stream {topology.stream!r}",
        "STREAM_MAX_AGE / STREAM_MAX_BYTES / STREAM_SEGMENT_BYTES (the broker compares them exactly: "
        "restore the values the stream was created with, or delete the stream to recreate it)",
        channel.declare_queue(
            topology.stream,
            durable=True,
            arguments=topology.stream_arguments(),
            timeout=timeout,
            robust=False,
        ),
    )
    for exchange in topology.event_exchanges:
        await _guard(
            f"binding of {topology.stream!r} to {exchange!r}",
            "permissions",
            stream.bind(exchange, routing_key=BIND_ALL, timeout=timeout, robust=False),
        )
    position_queue = await _guard(
        f"queue {topology.position_queue!r}",
        "QUEUE_TYPE / QUEUE_EXPIRES_MS (delete the queue or restore the previous values)",
        channel.declare_queue(
            topology.position_queue,
            durable=True,
            arguments=topology.position_queue_arguments(),
            timeout=timeout,
            robust=False,
        ),
    )
    return DeclaredTopology(
        stream=stream, position_queue=position_queue, dead_letter_exchange=dead_letter_exchange
    )


async def _guard(entity: str, check: str, operation: Awaitable[_T]) -> _T:
    """Await one declaration, turning the broker's "your configuration is wrong" into ours."""
    try:
        result = await operation
    except aiormq.exceptions.ChannelPreconditionFailed as error:
        raise BrokerConfigurationError(
            f"RabbitMQ refused {entity}: it already exists with different properties; check {check}. "
            f"Broker said: {_reply_text(error)}"
        ) from None
    except aiormq.exceptions.ChannelAccessRefused as error:
        raise BrokerConfigurationError(
            f"RabbitMQ refused {entity}: access refused for this user; check the permissions of the "
            f"RABBITMQ_URL user on this vhost. Broker said: {_reply_text(error)}"
        ) from None
    return result


def _reply_text(error: aiormq.exceptions.AMQPError) -> str:
    if error.args and isinstance(error.args[-1], str):
        return error.args[-1]
    return repr(error)
