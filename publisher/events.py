"""``EventPublisher`` for upstream services and tests, and builders of contract events.

Rule (publisher confirms: https://www.rabbitmq.com/docs/confirms): every message is validated against
the contract before it leaves
(unless ``validate=False``, which exists to exercise the dead-letter path), published as
persistent with ``content_type=application/json``, a ``message_id`` and a ``timestamp``, on a
channel with publisher confirms and ``mandatory`` — a publish returns only once the broker has
the message, and one that no queue receives raises ``UnroutableError`` instead of vanishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, Self

import aiormq.exceptions
import orjson
from aio_pika import DeliveryMode, Message, connect_robust
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection

from broker.connection import redact
from broker.errors import PublishError, UnroutableError
from broker.topology import declare_event_exchanges
from config.settings import Settings
from schemas import (
    DEFAULT_MAX_EVENT_BYTES,
    JSON_CONTENT_TYPE,
    Event,
    EventValidationError,
    JobAssigned,
    RecommendationReady,
    parse_event,
)

__all__ = [
    "EventPublisher",
    "Published",
    "job_assigned",
    "recommendation_ready",
    "routing_key_for",
]

_APP_ID: Final = "smartscheduler-realtime-publisher"


@dataclass(frozen=True, slots=True)
class Published:
    """What was published, as the broker confirmed it."""

    exchange: str
    routing_key: str
    message_id: str
    body: bytes

    def as_json(self) -> dict[str, Any]:
        try:
            body: Any = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            body = self.body.decode("utf-8", errors="replace")
        return {
            "exchange": self.exchange,
            "routingKey": self.routing_key,
            "messageId": self.message_id,
            "body": body,
        }


def routing_key_for(event: Event) -> str:
    """``recommendation.ready.{region}`` / ``job.assigned.{region}`` (the README's broker contract).

    Advisory: the instance queue is bound with ``#``.
    """
    match event:
        case RecommendationReady():
            return f"recommendation.ready.{event.region.lower()}"
        case JobAssigned():
            return f"job.assigned.{event.region.lower()}"


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def recommendation_ready(*, region: str, **fields: Any) -> dict[str, Any]:
    """A ``RecommendationReady`` body (camelCase keys); fields not given are generated."""
    body: dict[str, Any] = {
        "type": "RecommendationReady",
        "jobId": str(uuid.uuid4()),
        "requestId": str(uuid.uuid4()),
        "region": region,
        "configVersion": 1,
        "generatedAt": _timestamp(_now()),
    }
    body.update({key: value for key, value in fields.items() if value is not None})
    return body


def job_assigned(*, region: str, contractor_id: str, **fields: Any) -> dict[str, Any]:
    """A ``JobAssigned`` body (camelCase keys); fields not given are generated."""
    start = _now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    body: dict[str, Any] = {
        "type": "JobAssigned",
        "jobId": str(uuid.uuid4()),
        "contractorId": contractor_id,
        "assignmentId": str(uuid.uuid4()),
        "startUtc": _timestamp(start),
        "endUtc": _timestamp(start + timedelta(hours=2)),
        "region": region,
        "source": "auto",
        "auditId": str(uuid.uuid4()),
    }
    body.update({key: value for key, value in fields.items() if value is not None})
    return body


class EventPublisher:
    """Publishes contract events to the two event exchanges with publisher confirms.

    Use as ``async with EventPublisher(url) as publisher: await publisher.publish(body)``. The
    connection is aio-pika's robust one; a publish during a reconnect raises ``PublishError``
    (the caller decides whether to retry — a lost confirm may mean the broker has it).
    """

    def __init__(
        self,
        url: str,
        *,
        recommendations_exchange: str = "recommendations",
        assignments_exchange: str = "assignments",
        declare_exchanges: bool = True,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._url = url
        self._exchange_names = {
            "RecommendationReady": recommendations_exchange,
            "JobAssigned": assignments_exchange,
        }
        self._declare = declare_exchanges
        self._max_event_bytes = max_event_bytes
        self._timeout = timeout_seconds
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> EventPublisher:
        return cls(
            settings.amqp_url,
            recommendations_exchange=settings.recommendations_exchange,
            assignments_exchange=settings.assignments_exchange,
            max_event_bytes=settings.max_event_bytes,
            **kwargs,
        )

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and (by default) declare the event exchanges, exactly as the consumer does."""
        if self._connection is not None:
            return
        try:
            self._connection = await connect_robust(self._url, timeout=self._timeout)
            await self._open_channel(self._connection)
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as error:
            await self.close()
            raise PublishError(
                f"cannot connect to {redact(self._url)}: {type(error).__name__}: {error}"
            ) from error

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._exchanges = {}
        if connection is not None:
            await connection.close()

    async def publish(
        self, event: Event | dict[str, Any], *, message_id: str | None = None, routing_key: str | None = None
    ) -> Published:
        """Validate ``event`` (a model or a camelCase dict) and publish it; returns once confirmed."""
        body = orjson.dumps(event.to_client_payload() if not isinstance(event, dict) else event)
        return await self.publish_body(body, message_id=message_id, routing_key=routing_key)

    async def publish_body(
        self,
        body: bytes,
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
        message_id: str | None = None,
        content_type: str | None = JSON_CONTENT_TYPE,
        validate: bool = True,
        headers: dict[str, Any] | None = None,
    ) -> Published:
        """Publish raw bytes. With ``validate`` (the default) they must be a valid event.

        ``exchange`` and ``routing_key`` default to the event's; they are required for a body
        that is not a valid event (``validate=False``).
        """
        event: Event | None = None
        try:
            event = parse_event(body, max_bytes=self._max_event_bytes)
        except EventValidationError as error:
            if validate:
                raise PublishError(f"not published, invalid event: {error}") from error
        if exchange is None:
            if event is None:
                raise PublishError("exchange is required for a body that is not a valid event")
            exchange = self._exchange_names[event.type]
        if routing_key is None:
            routing_key = routing_key_for(event) if event is not None else ""
        message_id = message_id or str(uuid.uuid4())
        message = Message(
            body,
            content_type=content_type,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message_id,
            timestamp=_now(),
            app_id=_APP_ID,
            headers=headers,
        )
        target = await self._exchange(exchange)
        try:
            await target.publish(message, routing_key=routing_key, mandatory=True, timeout=self._timeout)
        except aiormq.exceptions.PublishError as error:
            raise UnroutableError(
                f"exchange {exchange!r} has no queue bound for {routing_key!r}: "
                "is the realtime service running?"
            ) from error
        except TimeoutError as error:
            await self._leave_channel()
            raise PublishError(
                f"not confirmed by the broker within {self._timeout} s (it may still have the message; "
                "the next publish uses a new channel)"
            ) from error
        except (aiormq.exceptions.AMQPError, RuntimeError) as error:
            raise PublishError(f"not confirmed by the broker: {type(error).__name__}: {error}") from error
        return Published(exchange=exchange, routing_key=routing_key, message_id=message_id, body=body)

    async def _leave_channel(self) -> None:
        """Close the channel a confirm did not come on; the next publish opens a new one.

        A broker can stop confirming on one channel for good: RabbitMQ 3.10 leaves a channel that
        first published to a stream while the stream's leader restarted with the old leader, and
        nothing on it is confirmed again, while a new channel publishes at once."""
        channel, self._channel, self._exchanges = self._channel, None, {}
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError, TimeoutError):
                await asyncio.wait_for(channel.close(), timeout=self._timeout)

    async def _open_channel(self, connection: AbstractRobustConnection) -> None:
        channel = connection.channel(publisher_confirms=True, on_return_raises=True)
        await asyncio.wait_for(channel.initialize(), timeout=self._timeout)
        self._channel = channel
        if self._declare:
            declared = await declare_event_exchanges(
                channel, tuple(self._exchange_names.values()), timeout=self._timeout, robust=True
            )
            self._exchanges.update(declared)

    async def _exchange(self, name: str) -> AbstractExchange:
        if self._connection is None:
            raise PublishError("EventPublisher is not connected; call connect() or use 'async with'")
        if self._channel is None:
            try:
                await self._open_channel(self._connection)
            except (aiormq.exceptions.AMQPError, OSError, RuntimeError, TimeoutError) as error:
                raise PublishError(f"cannot open a channel: {type(error).__name__}: {error}") from error
        assert self._channel is not None
        exchange = self._exchanges.get(name)
        if exchange is None:
            # An exchange we did not declare (``--exchange``): publish to it by name.
            exchange = self._exchanges[name] = await self._channel.get_exchange(name, ensure=False)
        return exchange
