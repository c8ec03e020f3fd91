"""Publishing events: ``EventPublisher`` for upstream services and tests, and a CLI for trying things by hand.

    python -m consumers.publish recommendation-ready --region north-america [--job-id ID] ...
    python -m consumers.publish job-assigned --region north-america --contractor-id ID [--source manual] ...
    python -m consumers.publish --json body.json [--no-validate --exchange assignments]

Common options (before or after the event name): ``--url`` (default: ``RABBITMQ_URL`` via the
settings), ``--count N``. Fields not given are generated (fresh UUIDs, "now"). Each published
message is printed as one JSON line. Exit status: 0 published; 1 invalid or not published.

Rule (publisher confirms: https://www.rabbitmq.com/docs/confirms): every message is validated against
the contract before it leaves
(unless ``validate=False``, which exists to exercise the dead-letter path), published as
persistent with ``content_type=application/json``, a ``message_id`` and a ``timestamp``, on a
channel with publisher confirms and ``mandatory`` — a publish returns only once the broker has
the message, and one that no queue receives raises ``UnroutableError`` instead of vanishing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import aiormq.exceptions
import orjson
from aio_pika import DeliveryMode, Message, connect_robust
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection

from config.settings import ConfigurationError, Settings, load_settings
from consumers.connection import redact
from consumers.errors import PublishError, UnroutableError
from consumers.topology import declare_event_exchanges
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
    "main",
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
            self._channel = self._connection.channel(publisher_confirms=True, on_return_raises=True)
            await asyncio.wait_for(self._channel.initialize(), timeout=self._timeout)
            if self._declare:
                declared = await declare_event_exchanges(
                    self._channel, tuple(self._exchange_names.values()), timeout=self._timeout, robust=True
                )
                self._exchanges.update(declared)
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
        except (aiormq.exceptions.AMQPError, RuntimeError, TimeoutError) as error:
            raise PublishError(f"not confirmed by the broker: {type(error).__name__}: {error}") from error
        return Published(exchange=exchange, routing_key=routing_key, message_id=message_id, body=body)

    async def _exchange(self, name: str) -> AbstractExchange:
        if self._channel is None:
            raise PublishError("EventPublisher is not connected; call connect() or use 'async with'")
        exchange = self._exchanges.get(name)
        if exchange is None:
            # An exchange we did not declare (``--exchange``): publish to it by name.
            exchange = self._exchanges[name] = await self._channel.get_exchange(name, ensure=False)
        return exchange


# --- CLI ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an option given before the event name must not be reset by the subparser's default.
    common.add_argument("--url", default=argparse.SUPPRESS, help="AMQP URL (default: RABBITMQ_URL)")
    common.add_argument(
        "--count", type=int, default=argparse.SUPPRESS, help="how many to publish (default 1)"
    )
    parser = argparse.ArgumentParser(
        prog="python -m consumers.publish",
        description="Publish SmartScheduler events to RabbitMQ (validated, persistent, confirmed).",
        parents=[common],
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="publish this body as is ('-' for stdin)")
    parser.add_argument("--no-validate", action="store_true", help="with --json: publish even if invalid")
    parser.add_argument("--exchange", help="override the exchange (required with --no-validate bodies)")
    parser.add_argument("--routing-key", help="override the routing key")
    events = parser.add_subparsers(dest="event", metavar="EVENT")

    ready = events.add_parser("recommendation-ready", parents=[common], help="publish RecommendationReady")
    ready.add_argument("--region", required=True)
    ready.add_argument("--job-id")
    ready.add_argument("--request-id")
    ready.add_argument("--config-version", type=int)
    ready.add_argument("--generated-at")

    assigned = events.add_parser("job-assigned", parents=[common], help="publish JobAssigned")
    assigned.add_argument("--region", required=True)
    assigned.add_argument("--contractor-id", required=True)
    assigned.add_argument("--job-id")
    assigned.add_argument("--assignment-id")
    assigned.add_argument("--start-utc")
    assigned.add_argument("--end-utc")
    assigned.add_argument("--source", choices=["auto", "manual"])
    assigned.add_argument("--audit-id")
    return parser


def _bodies(args: argparse.Namespace, count: int) -> list[bytes]:
    if args.json is not None:
        raw = sys.stdin.buffer.read() if str(args.json) == "-" else args.json.read_bytes()
        return [raw] * count
    if args.event == "recommendation-ready":
        return [
            orjson.dumps(
                recommendation_ready(
                    region=args.region,
                    jobId=args.job_id,
                    requestId=args.request_id,
                    configVersion=args.config_version,
                    generatedAt=args.generated_at,
                )
            )
            for _ in range(count)
        ]
    return [
        orjson.dumps(
            job_assigned(
                region=args.region,
                contractor_id=args.contractor_id,
                jobId=args.job_id,
                assignmentId=args.assignment_id,
                startUtc=args.start_utc,
                endUtc=args.end_utc,
                source=args.source,
                auditId=args.audit_id,
            )
        )
        for _ in range(count)
    ]


async def _publish_all(args: argparse.Namespace, settings: Settings | None) -> int:
    url = getattr(args, "url", None) or (
        settings.amqp_url if settings else "amqp://guest:guest@localhost:5672/"
    )
    count = getattr(args, "count", 1)
    if count < 1:
        print("--count must be at least 1", file=sys.stderr)
        return 1
    bodies = _bodies(args, count)
    publisher = (
        EventPublisher(
            url,
            recommendations_exchange=settings.recommendations_exchange,
            assignments_exchange=settings.assignments_exchange,
            max_event_bytes=settings.max_event_bytes,
        )
        if settings
        else EventPublisher(url)
    )
    try:
        async with publisher:
            for body in bodies:
                published = await publisher.publish_body(
                    body,
                    exchange=args.exchange,
                    routing_key=args.routing_key,
                    validate=not args.no_validate,
                )
                print(orjson.dumps(published.as_json()).decode(), flush=True)
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.json is None and args.event is None:
        parser.error("give an event name (recommendation-ready, job-assigned) or --json FILE")
    if args.json is not None and args.event is not None:
        parser.error("--json and an event name are mutually exclusive")
    if args.no_validate and args.json is None:
        parser.error("--no-validate only applies to --json bodies")
    try:
        # Exchange names and the URL come from the one settings model; the auth settings are
        # irrelevant to publishing, so dev mode only lets the model validate without them.
        settings: Settings | None = load_settings(auth_dev_mode=True)
    except ConfigurationError as error:
        print(f"warning: ignoring the environment's settings ({error}); using defaults", file=sys.stderr)
        settings = None
    return asyncio.run(_publish_all(args, settings))


if __name__ == "__main__":
    sys.exit(main())
