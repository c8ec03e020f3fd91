"""The broker entities this service owns, and declaring them idempotently.

Topology (the README's "Broker contract"):

- ``RECOMMENDATIONS_EXCHANGE`` and ``ASSIGNMENTS_EXCHANGE``: durable **topic** exchanges. Producers
  publish ``RecommendationReady`` with routing keys ``recommendation.ready.{region}`` and
  ``JobAssigned`` with ``job.assigned.{region}``; routing keys are advisory — we bind with ``#``.
- One durable queue per instance, ``{QUEUE_PREFIX}{INSTANCE_ID}``, bound to both exchanges, with
  ``x-queue-type`` (``QUEUE_TYPE``), ``x-expires`` (``QUEUE_EXPIRES_MS``: the broker removes the
  queue of an instance that is gone for good) and ``x-dead-letter-exchange``.
- ``DEAD_LETTER_EXCHANGE`` (durable **fanout**) and ``DEAD_LETTER_QUEUE`` (durable, bound to it):
  every message this service refuses ends up there, from any instance, whatever its routing key.

Rule: declaring is idempotent and safe to repeat on every (re)connect. A declaration the broker
refuses because the entity exists with other properties (406 PRECONDITION_FAILED) or because we
lack permission (403) becomes one ``BrokerConfigurationError`` naming the entity and the setting —
it is a configuration problem, and retrying would only repeat it.

Quorum queues on RabbitMQ 3.10: ``x-expires`` is honoured, but the lease is only renewed by
consumer activity — re-declaring does not renew it — so a quorum instance queue is removed
``QUEUE_EXPIRES_MS`` after its last consumer went away, whether or not the instance re-declared it
meanwhile. Keep ``QUEUE_EXPIRES_MS`` well above the longest restart. Quorum queues also cannot be
exclusive or non-durable (we use neither) and do not support global QoS (we use per-consumer QoS).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import aiormq.exceptions
from aio_pika import ExchangeType
from aio_pika.abc import AbstractRobustChannel, AbstractRobustExchange, AbstractRobustQueue

from config.settings import QueueType, Settings
from consumers.errors import BrokerConfigurationError

__all__ = ["BIND_ALL", "DeclaredTopology", "Topology", "declare_event_exchanges", "declare_topology"]

BIND_ALL: Final = "#"
_MAX_NAME_BYTES: Final = 255  # AMQP 0-9-1 short string
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Topology:
    """Names and arguments of every entity, derived from settings in one place."""

    recommendations_exchange: str
    assignments_exchange: str
    dead_letter_exchange: str
    dead_letter_queue: str
    queue: str
    queue_type: QueueType
    queue_expires_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        topology = cls(
            recommendations_exchange=settings.recommendations_exchange,
            assignments_exchange=settings.assignments_exchange,
            dead_letter_exchange=settings.dead_letter_exchange,
            dead_letter_queue=settings.dead_letter_queue,
            queue=f"{settings.queue_prefix}{settings.instance_id}",
            queue_type=settings.queue_type,
            queue_expires_ms=settings.queue_expires_ms,
        )
        for setting, name in (
            ("QUEUE_PREFIX + INSTANCE_ID", topology.queue),
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

    def queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": self.queue_type.value,
            "x-expires": self.queue_expires_ms,
            "x-dead-letter-exchange": self.dead_letter_exchange,
        }

    def dead_letter_queue_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": self.queue_type.value}


@dataclass(frozen=True, slots=True)
class DeclaredTopology:
    """Handles on the declared entities, bound to the channel that declared them."""

    queue: AbstractRobustQueue
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
    queue = await _guard(
        f"queue {topology.queue!r}",
        "QUEUE_TYPE / QUEUE_EXPIRES_MS (delete the queue or restore the previous values)",
        channel.declare_queue(
            topology.queue,
            durable=True,
            arguments=topology.queue_arguments(),
            timeout=timeout,
            robust=False,
        ),
    )
    for exchange in topology.event_exchanges:
        await _guard(
            f"binding of {topology.queue!r} to {exchange!r}",
            "permissions",
            queue.bind(exchange, routing_key=BIND_ALL, timeout=timeout, robust=False),
        )
    return DeclaredTopology(queue=queue, dead_letter_exchange=dead_letter_exchange)


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
