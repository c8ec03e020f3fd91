"""EventConsumer: the instance queue → validated events → hub groups, acknowledged only after hand-off.

One delivery, start to end (acknowledgement semantics: https://www.rabbitmq.com/docs/confirms):

1. aio-pika calls ``_on_delivery``, which only appends the message to an in-memory inbox. A single
   worker takes messages from it one at a time, so they are handled strictly in queue order
   (aio-pika runs callbacks as concurrent tasks; the inbox is what makes order hold).
2. A message whose channel has closed since it arrived is dropped without ack: the broker has
   already requeued it and will redeliver it on the new channel. Acking it would fail ("unknown
   delivery tag" is per channel) — it is never attempted.
3. ``redelivered`` and already handled within ``DEDUP_WINDOW_SECONDS`` (same ``message_id``, else
   same body hash) → ack, not pushed again.
4. Content headers and body are validated (``schemas.parse_event``). Invalid → dead-lettered:
   published to ``DEAD_LETTER_EXCHANGE`` with confirms and headers saying why
   (``consumers.dead_letter``), then acked; if that publish fails, ``reject(requeue=False)`` so
   the broker dead-letters it through the queue's ``x-dead-letter-exchange``. Either way it is
   gone from the queue at once: it cannot loop, block what follows, or stop the worker.
5. Valid → ``GroupSender.send_groups(groups, event.type, payload)`` → ack. Acks of valid events
   are batched: the worker drains what the prefetch window has already delivered and acknowledges
   it with one ``basic.ack`` ``multiple=True`` (``_drain``), never before the hand-off. If the hub raises,
   the same message is retried in place ``send_attempts`` times with a short backoff (order is
   kept: nothing behind it is handled meanwhile), then dead-lettered with reason ``send_failed``
   so it can be replayed. It is never requeued to the broker: with prefetch the messages behind
   it are already here, and a requeue would put it after them and could loop.

Connection life: ``start()`` returns at once; a background task connects (tenacity, then forever
in windows — the hub keeps serving while the broker is down), declares the topology, waits out
``CONSUME_GRACE_SECONDS`` since ``start()`` (clients reconnect and rejoin their groups before the
backlog flows), then consumes. One supervisor loop re-establishes the consumer whenever it is
missing — after a reconnect, a broker ``basic.cancel`` (queue deleted), a channel error, or when
its periodic watchdog check finds no consumer — by the same steps as the first time: it is never
"alive with no consumer" for longer than one watchdog interval.

Rule: a message is acknowledged only after the hub took it or the dead-letter exchange confirmed
it; everything else stays unacknowledged and comes back. Nothing in here raises into the caller
except ``start()`` misuse; broker trouble shows as ``is_connected`` / ``is_consuming``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, cast

import aiormq.exceptions
import structlog
from aio_pika import ExchangeType
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustExchange,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, ChannelInvalidStateError
from aiormq import Channel as UnderlayChannel
from aiormq import spec

from config.settings import Settings
from consumers import metrics
from consumers.connection import JitteredRobustConnection, amqp_url, connect_with_retry, redact
from consumers.dead_letter import dead_letter_message
from consumers.dedup import RedeliveryFilter, message_key
from consumers.errors import BrokerConfigurationError
from consumers.ports import GroupSender, WriteCoalescing
from consumers.routes import groups_for
from consumers.topology import DeclaredTopology, Topology, declare_topology
from schemas import (
    Event,
    EventValidationError,
    JobAssigned,
    RecommendationReady,
    check_content_headers,
    parse_event,
)
from schemas.events import parse_timestamp

__all__ = ["EventConsumer"]

log = structlog.get_logger(__name__)

# Broker or network trouble that a later attempt may not have: retried, never fatal.
_TRANSIENT: Final = (*CONNECTION_EXCEPTIONS, TimeoutError)


class EventConsumer:
    """Consumes this instance's queue and hands each event to the hub's groups.

    ``start()``/``stop()`` bracket its life (both idempotent); ``is_connected`` and
    ``is_consuming`` are for readiness; ``fatal_error`` is set when the broker rejects our
    configuration, after which it stays stopped (``on_fatal`` is called once, e.g. to exit).
    """

    def __init__(
        self,
        settings: Settings,
        sender: GroupSender,
        *,
        heartbeat_seconds: int = 20,
        reconnect_interval_seconds: float = 2.0,
        watchdog_interval_seconds: float = 5.0,
        operation_timeout_seconds: float = 10.0,
        send_attempts: int = 3,
        send_retry_delay_seconds: float = 0.05,
        on_fatal: Callable[[BrokerConfigurationError], None] | None = None,
        writes: WriteCoalescing | None = None,
    ) -> None:
        if send_attempts < 1:
            raise ValueError("send_attempts must be at least 1")
        self._settings = settings
        self._sender = sender
        self._topology = Topology.from_settings(settings)
        self.connection_name: Final = f"smartscheduler-realtime:{settings.instance_id}"
        self._url = amqp_url(
            settings.amqp_url,
            heartbeat_seconds=heartbeat_seconds,
            connection_name=self.connection_name,
            reconnect_interval_seconds=reconnect_interval_seconds,
        )
        self._watchdog_interval = watchdog_interval_seconds
        self._operation_timeout = operation_timeout_seconds
        self._send_attempts = send_attempts
        self._send_retry_delay = send_retry_delay_seconds
        self._on_fatal = on_fatal
        self._dedup = RedeliveryFilter(settings.dedup_window_seconds, settings.dedup_max_entries)

        self._connection: JitteredRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._declared: DeclaredTopology | None = None
        self._dead_letter_exchange: AbstractRobustExchange | None = None
        self._consumer_tag: str | None = None
        self._consumer_channel: UnderlayChannel | None = None

        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._type_metrics: dict[str, _TypeMetrics] = {}
        self._writes: WriteCoalescing = writes if writes is not None else _NoCoalescing()
        # The channel on which an unexpected error left a message unacked: no multiple acks there.
        self._single_ack_channel: object | None = None
        self._link_ready = asyncio.Event()
        self._consuming = asyncio.Event()
        self._wake = asyncio.Event()
        self._wake_cause = "watchdog"
        self._accepting = False
        self._handling = False
        self._stopping = False
        self._grace_over = False
        self._started_at: float | None = None
        self._fatal: BrokerConfigurationError | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._worker_task: asyncio.Task[None] | None = None

    # --- readiness ---------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Connected to the broker (channels restored). ``/readyz`` should require this."""
        return self._link_ready.is_set()

    @property
    def is_consuming(self) -> bool:
        """A consumer is registered on the instance queue (false during the grace period)."""
        return self._consuming.is_set() and self._consumer_alive()

    @property
    def fatal_error(self) -> BrokerConfigurationError | None:
        """Why the consumer gave up, when the broker rejected its configuration."""
        return self._fatal

    @property
    def queue_name(self) -> str:
        return self._topology.queue

    async def wait_connected(self) -> None:
        """Return once connected (for tests and startup probes; wrap in a timeout)."""
        await self._link_ready.wait()

    async def wait_consuming(self) -> None:
        """Return once a consumer is registered (for tests and startup probes; wrap in a timeout)."""
        await self._consuming.wait()

    # --- lifetime ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting and consuming in the background; returns at once."""
        if self._main_task is not None:
            raise RuntimeError("EventConsumer.start() called twice")
        loop = asyncio.get_running_loop()
        self._started_at = loop.time()
        self._accepting = True
        self._worker_task = asyncio.create_task(self._work(), name="event-consumer-worker")
        self._main_task = asyncio.create_task(self._run(), name="event-consumer-supervisor")
        log.info(
            "consumer.starting",
            broker=redact(self._url),
            queue=self._topology.queue,
            graceSeconds=self._settings.consume_grace_seconds,
            prefetch=self._settings.prefetch_count,
        )

    async def stop(self) -> None:
        """Stop gracefully within ``SHUTDOWN_TIMEOUT_SECONDS``.

        Order: stop re-establishing; cancel the consumer (no new deliveries);
        let the message being handled finish and be acked; close the channels and the connection.
        Messages received but not yet handled are not acked — closing the channel returns them to
        the queue, where this instance (after a restart) finds them.
        """
        if self._stopping:
            return
        self._stopping = True
        self._accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.shutdown_timeout_seconds

        def remaining() -> float:
            return max(0.0, deadline - loop.time())

        await _cancel(self._main_task)
        await self._cancel_consumer(timeout=min(remaining(), self._operation_timeout))
        worker = self._worker_task
        if worker is not None and not worker.done():
            if self._handling:
                # The worker leaves its loop after the current message because _accepting is False.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(worker), timeout=remaining())
            await _cancel(worker)
        await self._close_connection(timeout=remaining())
        self._link_ready.clear()
        self._set_consuming(False)
        metrics.BROKER_CONNECTED.set(0)
        log.info("consumer.stopped", unhandled=self._inbox.qsize())

    # --- supervisor: connect, then keep exactly one consumer ---------------------------------

    async def _run(self) -> None:
        try:
            connection = await self._connect()
            self._connection = connection
            connection.close_callbacks.add(self._on_connection_closed)
            connection.reconnect_callbacks.add(self._on_reconnected)
            self._set_link(up=True)
            await self._maintain()
        except BrokerConfigurationError as error:
            await self._fail(error)

    async def _connect(self) -> JitteredRobustConnection:
        window = self._settings.broker_connect_timeout_seconds
        while True:
            try:
                return await connect_with_retry(
                    self._url,
                    window_seconds=window,
                    attempt_timeout_seconds=min(self._operation_timeout, window),
                    max_backoff_seconds=min(10.0, window / 2),
                )
            except _TRANSIENT as error:
                log.error(
                    "broker.unreachable",
                    broker=redact(self._url),
                    unreachableForSeconds=window,
                    error=f"{type(error).__name__}: {error}",
                )

    async def _maintain(self) -> None:
        failures = 0
        lost_cause: str | None = None
        while not self._stopping:
            if self._consumer_alive():
                self._set_consuming(True)
                self._wake.clear()
                self._wake_cause = "watchdog"  # unless a callback says otherwise before we wake
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._watchdog_interval)
                continue
            if self._consumer_tag is not None:
                lost_cause = self._wake_cause
                log.warning("consumer.lost", cause=lost_cause, queue=self._topology.queue)
                self._consumer_tag = None
                self._consumer_channel = None
                self._set_consuming(False)
            if not self._link_ready.is_set():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._link_ready.wait(), timeout=self._watchdog_interval)
                continue
            try:
                await self._establish()
            except _TRANSIENT as error:
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
                log.warning(
                    "consumer.start_failed",
                    attempt=failures,
                    retryInSeconds=round(delay, 2),
                    error=f"{type(error).__name__}: {error}",
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            if lost_cause is not None and self._consumer_tag is not None:
                metrics.CONSUMER_RESTARTS.labels(cause=lost_cause).inc()
                lost_cause = None

    async def _establish(self) -> None:
        """Channels, topology, grace period, ``basic.consume`` — the same steps every time."""
        timeout = self._operation_timeout
        channel = self._channel = await self._ensure_channel(self._channel, publisher_confirms=False)
        publish_channel = self._publish_channel = await self._ensure_channel(
            self._publish_channel, publisher_confirms=True
        )
        declared = await declare_topology(channel, self._topology, timeout=timeout)
        # The dead-letter exchange handle used for publishing lives on the confirming channel.
        self._dead_letter_exchange = await publish_channel.declare_exchange(
            self._topology.dead_letter_exchange,
            ExchangeType.FANOUT,
            durable=True,
            timeout=timeout,
            robust=False,
        )
        self._declared = declared
        await self._await_grace()
        if self._stopping:
            return
        # aio-pika types the underlying channel abstractly; it is an aiormq.Channel, which has ``consumers``.
        underlay = cast(UnderlayChannel, await channel.get_underlay_channel())
        underlay.on_consumer_cancel_callbacks.add(self._on_consumer_cancelled)
        self._consumer_tag = await declared.queue.consume(self._on_delivery, timeout=timeout, robust=False)
        self._consumer_channel = underlay
        self._set_consuming(True)
        log.info("consumer.consuming", queue=self._topology.queue, consumerTag=self._consumer_tag)

    async def _ensure_channel(
        self, current: AbstractRobustChannel | None, *, publisher_confirms: bool
    ) -> AbstractRobustChannel:
        if current is not None and current.is_closed:
            # aio-pika reopens a robust channel the broker closed; give that a moment to finish.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(current.ready(), timeout=min(2.0, self._operation_timeout))
        if current is not None and not current.is_closed:
            return current
        if current is not None:
            # Closed for good from our side, so aio-pika stops restoring it behind our back.
            with contextlib.suppress(*_TRANSIENT):
                await asyncio.wait_for(current.close(), timeout=self._operation_timeout)
        connection = self._connection
        if connection is None:
            raise ChannelInvalidStateError("not connected")
        channel = connection.channel(
            publisher_confirms=publisher_confirms, on_return_raises=publisher_confirms
        )
        await asyncio.wait_for(channel.initialize(), timeout=self._operation_timeout)
        channel.close_callbacks.add(self._on_channel_closed)
        if not publisher_confirms:
            # Per-consumer prefetch (global QoS is an error on quorum queues); restored on reconnect.
            await channel.set_qos(
                prefetch_count=self._settings.prefetch_count, timeout=self._operation_timeout
            )
        return channel

    async def _await_grace(self) -> None:
        if self._grace_over or self._started_at is None:
            return
        loop = asyncio.get_running_loop()
        remaining = self._started_at + self._settings.consume_grace_seconds - loop.time()
        if remaining > 0:
            log.info("consumer.grace_wait", seconds=round(remaining, 2))
            await asyncio.sleep(remaining)
        self._grace_over = True

    def _consumer_alive(self) -> bool:
        channel, tag = self._consumer_channel, self._consumer_tag
        return tag is not None and channel is not None and not channel.is_closed and tag in channel.consumers

    async def _fail(self, error: BrokerConfigurationError) -> None:
        self._fatal = error
        self._accepting = False
        log.error("consumer.stopped_by_configuration_error", error=str(error))
        await self._close_connection(timeout=self._operation_timeout)
        self._set_link(up=False)
        self._set_consuming(False)
        if self._on_fatal is not None:
            self._on_fatal(error)

    # --- broker callbacks: record what happened, wake the supervisor -------------------------

    def _on_connection_closed(self, _: object, error: BaseException | None) -> None:
        if self._stopping or self._fatal is not None:
            return
        log.warning("broker.connection_lost", error=f"{type(error).__name__}: {error}")
        self._set_link(up=False)
        self._set_consuming(False)
        self._poke("reconnected")

    def _on_reconnected(self, _: object) -> None:
        log.info("broker.reconnected")
        self._set_link(up=True)
        self._poke("reconnected")

    def _on_channel_closed(self, _: object, error: BaseException | None) -> None:
        # Only a channel-level error (e.g. 406/404 closing just this channel) is ours to handle
        # here; a channel closed along with its connection is handled by _on_connection_closed,
        # and a channel we closed ourselves carries no error.
        if isinstance(error, aiormq.exceptions.AMQPChannelError) and not self._stopping:
            log.warning("broker.channel_closed", error=f"{type(error).__name__}: {error}")
            self._poke("channel_closed")

    def _on_consumer_cancelled(self, frame: spec.Basic.Cancel) -> None:
        if frame.consumer_tag == self._consumer_tag and not self._stopping:
            log.warning("broker.consumer_cancelled", consumerTag=frame.consumer_tag)
            self._set_consuming(False)
            self._poke("cancelled")

    def _poke(self, cause: str) -> None:
        self._wake_cause = cause
        self._wake.set()

    def _set_link(self, *, up: bool) -> None:
        if up:
            self._link_ready.set()
        else:
            self._link_ready.clear()
        metrics.BROKER_CONNECTED.set(1 if up else 0)

    def _set_consuming(self, consuming: bool) -> None:
        if consuming:
            self._consuming.set()
        else:
            self._consuming.clear()
        metrics.CONSUMER_ACTIVE.set(1 if consuming else 0)

    # --- the worker: one message at a time ---------------------------------------------------

    async def _on_delivery(self, message: AbstractIncomingMessage) -> None:
        # No await before put_nowait: callbacks start in delivery order, so the inbox keeps it.
        if self._accepting:
            self._inbox.put_nowait(message)

    async def _work(self) -> None:
        while self._accepting:
            message = await self._inbox.get()
            if not self._accepting:
                break  # left unacked: returned to the queue when the channel closes
            self._handling = True
            try:
                await self._drain(message)
            finally:
                self._handling = False

    async def _drain(self, message: AbstractIncomingMessage) -> None:
        """Handle ``message`` and whatever the prefetch window already put behind it, in order.

        Valid events are handed off one after the other; their acks are deferred and sent as one
        ``basic.ack`` with ``multiple=True`` (it covers every earlier delivery tag on the channel,
        all of which were handled, in order, before it) once the inbox is empty, every half
        prefetch window (so the broker keeps sending), or before the channel changes. Nothing is
        acknowledged before it was handed off and flushed to the sockets.

        While a backlog waits in the inbox, the hub's socket writes are held (``WriteCoalescing``), so
        a connection in the groups of several queued events gets them in one write.
        """
        inbox = self._inbox
        writes = self._writes
        deferred: list[AbstractIncomingMessage] = []
        ack_every = max(1, self._settings.prefetch_count // 2)
        info = _enabled(logging.INFO)
        held = False
        deferred_channel: object | None = None
        try:
            while True:
                channel = _channel_of(message)
                try:
                    handed_off = await self._handle(message, channel, info=info)
                except Exception:
                    log.exception("message.handling_failed")
                    # A later multiple ack on this channel would cover it: from now on ack one by one.
                    self._single_ack_channel = channel
                    handed_off = False
                if handed_off:
                    if deferred and channel is not deferred_channel:
                        await self._ack_deferred(deferred)
                    deferred_channel = channel
                    deferred.append(message)
                    if len(deferred) >= ack_every:
                        await self._ack_deferred(deferred)
                    else:
                        if inbox.empty():
                            writes.flush()  # nothing waiting: no reason to hold anything back
                        elif not held:
                            writes.hold()  # a backlog: coalesce socket writes until the next flush
                            held = True
                        # One turn of the event loop per message, as a per-message ack gave: a
                        # stop() (SIGTERM) still takes effect after the current message.
                        await asyncio.sleep(0)
                if not self._accepting:
                    break  # stopping: what is still in the inbox stays unacked and comes back
                try:
                    message = inbox.get_nowait()
                except asyncio.QueueEmpty:
                    break
            await self._ack_deferred(deferred)
        finally:
            if held:
                writes.release()

    async def _ack_deferred(self, deferred: list[AbstractIncomingMessage]) -> None:
        if not deferred:
            return
        self._writes.flush()  # acknowledged means handed to the sockets' transports
        batch = deferred[:]
        deferred.clear()
        last = batch[-1]
        if len(batch) == 1:
            await self._settle(last, ack=True, bound=log)
        elif _channel_of(last) is self._single_ack_channel:
            for message in batch:
                await self._settle(message, ack=True, bound=log)
        else:
            await self._settle(last, ack=True, bound=log, multiple=True)

    async def _handle(
        self, message: AbstractIncomingMessage, channel: object | None = None, *, info: bool = True
    ) -> bool:
        """Handle one message; ``True`` means it was handed off and the caller must ack it.

        ``channel`` is ``_channel_of(message)`` when the caller has it already.
        """
        if channel is None:
            channel = _channel_of(message)
        if channel is None or getattr(channel, "is_closed", False):
            log.debug(
                "message.skipped_closed_channel",
                **_message_fields(message),
            )
            return False
        key = message_key(message.message_id, message.body)
        if message.redelivered and self._dedup.seen(key):
            self._writes.flush()
            bound = log.bind(**_message_fields(message))
            metrics.EVENTS_DUPLICATE.inc()
            bound.info("message.duplicate_acked")
            await self._settle(message, ack=True, bound=bound)
            return False
        try:
            check_content_headers(message.content_type, message.content_encoding)
            event = parse_event(message.body, max_bytes=self._settings.max_event_bytes)
        except EventValidationError as error:
            metrics.EVENTS_CONSUMED.labels(type=metrics.INVALID).inc()
            bound = log.bind(**_message_fields(message))
            await self._dead_letter(message, key, error.reason.value, error.detail, bound)
            return False
        by_type = self._type_metrics.get(event.type)
        if by_type is None:
            by_type = self._type_metrics[event.type] = _TypeMetrics(event.type)
        by_type.consumed.inc()
        groups = groups_for(event)
        delivered = await self._hand_off(event, groups, message)
        if delivered is None:
            bound = log.bind(**_message_fields(message), **_log_fields(event))
            detail = f"send_groups failed {self._send_attempts} times; see the instance's logs"
            await self._dead_letter(message, key, metrics.SEND_FAILED, detail, bound)
            return False
        by_type.delivered.inc(delivered)
        latency = _latency_seconds(message, event)
        if latency is not None:
            by_type.latency.observe(latency)
        self._dedup.remember(key)
        if info:
            log.info(
                "event.delivered",
                **_message_fields(message),
                **_log_fields(event),
                groups=list(groups),
                connections=delivered,
            )
        return True

    async def _hand_off(
        self, event: Event, groups: Sequence[str], message: AbstractIncomingMessage
    ) -> int | None:
        payload = event.to_client_payload()
        for attempt in range(1, self._send_attempts + 1):
            try:
                return self._sender.send_groups(groups, event.type, payload)
            except Exception as error:  # the hub is another component; its failure must not lose the event
                metrics.SEND_FAILURES.inc()
                log.warning(
                    "event.send_failed",
                    **_message_fields(message),
                    **_log_fields(event),
                    attempt=attempt,
                    of=self._send_attempts,
                    error=f"{type(error).__name__}: {error}",
                    exc_info=attempt == self._send_attempts,
                )
                if attempt < self._send_attempts:
                    await asyncio.sleep(self._send_retry_delay * 2 ** (attempt - 1))
        return None

    async def _dead_letter(
        self, message: AbstractIncomingMessage, key: str, reason: str, detail: str, bound: Any
    ) -> None:
        self._writes.flush()  # nothing handed off waits behind a broker round trip
        bound = bound.bind(reason=reason, error=detail)
        exchange = self._dead_letter_exchange
        outgoing = dead_letter_message(
            message,
            reason=reason,
            detail=detail,
            instance_id=self._settings.instance_id,
            queue=self._topology.queue,
        )
        try:
            if exchange is None:
                raise ChannelInvalidStateError("dead-letter exchange not declared")
            await exchange.publish(
                outgoing,
                routing_key=message.routing_key or "",
                mandatory=True,
                timeout=self._operation_timeout,
            )
        except _TRANSIENT as error:
            # The queue's own x-dead-letter-exchange takes it; only RabbitMQ's x-death says why.
            bound.warning(
                "message.dead_letter_publish_failed",
                publishError=f"{type(error).__name__}: {error}",
            )
            if await self._settle(message, ack=False, bound=bound):
                metrics.EVENTS_DEAD_LETTERED.labels(reason=reason).inc()
            return
        metrics.EVENTS_DEAD_LETTERED.labels(reason=reason).inc()
        self._dedup.remember(key)
        bound.warning("message.dead_lettered")
        await self._settle(message, ack=True, bound=bound)

    async def _settle(
        self, message: AbstractIncomingMessage, *, ack: bool, bound: Any, multiple: bool = False
    ) -> bool:
        """Ack, or reject without requeue; a closed channel means the broker redelivers instead."""
        try:
            if ack:
                await message.ack(multiple=multiple)
            else:
                await message.reject(requeue=False)
        except _TRANSIENT as error:
            bound.info(
                "message.settle_failed",
                error=f"{type(error).__name__}: {error}",
            )
            return False
        return True

    # --- shutdown helpers --------------------------------------------------------------------

    async def _cancel_consumer(self, *, timeout: float) -> None:
        tag, declared = self._consumer_tag, self._declared
        self._set_consuming(False)
        if tag is None or declared is None or not self._consumer_alive():
            return
        try:
            await asyncio.wait_for(declared.queue.cancel(tag), timeout=timeout)
        except _TRANSIENT as error:
            log.info("consumer.cancel_failed", error=f"{type(error).__name__}: {error}")

    async def _close_connection(self, *, timeout: float) -> None:
        connection = self._connection
        if connection is None or connection.is_closed:
            return
        try:
            await asyncio.wait_for(connection.close(), timeout=max(timeout, 0.1))
        except _TRANSIENT as error:
            log.warning("broker.close_failed", error=f"{type(error).__name__}: {error}")


class _NoCoalescing:
    """Without a write batch every send is written at once: nothing to hold or flush."""

    def hold(self) -> None:
        return None

    def flush(self) -> None:
        return None

    def release(self) -> None:
        return None


class _TypeMetrics:
    """The labelled metric children of one event type, looked up once instead of per message."""

    __slots__ = ("consumed", "delivered", "latency")

    def __init__(self, event_type: str) -> None:
        self.consumed = metrics.EVENTS_CONSUMED.labels(type=event_type)
        self.delivered = metrics.EVENTS_DELIVERED.labels(type=event_type)
        self.latency = metrics.EVENT_LATENCY.labels(type=event_type)


def _enabled(level: int) -> bool:
    """Whether the service's logger emits ``level`` (checked once per batch, not per message)."""
    try:
        return bool(log.isEnabledFor(level))
    except AttributeError:  # a structlog configuration without stdlib levels: assume it does
        return True


def _message_fields(message: AbstractIncomingMessage) -> dict[str, Any]:
    return {
        "messageId": message.message_id,
        "deliveryTag": message.delivery_tag,
        "redelivered": message.redelivered,
        "routingKey": message.routing_key,
    }


def _channel_of(message: AbstractIncomingMessage) -> object | None:
    try:
        return message.channel
    except ChannelInvalidStateError:
        return None


def _log_fields(event: Event) -> dict[str, str]:
    fields = {"type": event.type, "jobId": event.job_id, "region": event.region}
    if isinstance(event, RecommendationReady):
        fields["requestId"] = event.request_id
    elif isinstance(event, JobAssigned):
        fields["contractorId"] = event.contractor_id
        fields["assignmentId"] = event.assignment_id
    return fields


def _latency_seconds(message: AbstractIncomingMessage, event: Event) -> float | None:
    """Seconds since publication: AMQP ``timestamp`` (1 s resolution), else ``generatedAt``."""
    sent_at = message.timestamp
    if sent_at is None and isinstance(event, RecommendationReady):
        sent_at = parse_timestamp(event.generated_at)
    if not isinstance(sent_at, datetime):
        return None
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    return max(0.0, time.time() - sent_at.timestamp())


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait for it, without swallowing a cancellation of the caller."""
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.error("consumer.task_failed", task=task.get_name(), exc_info=task.exception())
