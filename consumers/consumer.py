"""EventConsumer: the shared stream → validated events → the hub, in log order, resumable anywhere.

Every instance reads the same RabbitMQ stream (``STREAM_NAME``), so an event has one offset on all
of them. One entry, start to end:

1. aio-pika calls ``_on_delivery``, which only appends the message to an in-memory inbox; a single
   worker takes messages from it one at a time, strictly in stream order.
2. ``consumers.handling.classify`` decides what the entry is: an event to deliver, a message to
   dead-letter (with the reason), a duplicate of a message id already handled, or a marker.
3. Every entry is recorded in the hub's history (``EventLog.record``), so that any position the
   service hands out can be checked and replayed from; an event is then delivered
   (``EventLog.deliver``) to its groups, with its position for clients that asked for positions.
4. Credit goes back to the stream in bulk (``consumers.settle``); a stream keeps its messages, so
   "acknowledged" only means "send more".

Phases. A starting instance first *prefills*: it reads the last ``HISTORY_WINDOW_SECONDS`` of the
stream into the history without delivering anything, up to the position it last delivered before
it went down (``consumers.positions``) or, for a new instance, up to a marker it wrote into the log
at start. It is then caught up (``/readyz``), waits out ``CONSUME_GRACE_SECONDS`` since it started
so that clients can rejoin, and goes *live*: the backlog published while it was away and
everything after is delivered.

Losing the place. After any broker trouble the consumer re-attaches at the offset after the last
entry it read. If the stream no longer has that stretch (retention removed it while the link was
down) or no longer reaches that offset (it was deleted and recreated), the hub is told to reset
(``EventLog.reset``: history forgotten, position-tracking clients asked to resume).

Rule: the worker never waits for a client; nothing raises into the caller except ``start()``
misuse; broker trouble shows as ``is_connected`` / ``is_consuming`` / ``is_caught_up``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final

import structlog
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import ChannelInvalidStateError

from broker.connection import amqp_url, redact
from broker.errors import BrokerConfigurationError
from broker.topology import Topology, declare_topology
from config.settings import Settings
from consumers import metrics
from consumers.dedup import DuplicateFilter
from consumers.handling import OFFSET_HEADER, DeadLetter, Deliver, Delivery, Duplicate, Marker, classify
from consumers.link import BrokerLink, LinkChannels
from consumers.metrics import SEND_FAILED
from consumers.ports import EventLog, WriteCoalescing
from consumers.positions import PositionStore, SavedPosition
from consumers.settle import Settler
from schemas.log import LogRecord, Position

__all__ = ["EventConsumer"]

log = structlog.get_logger(__name__)

# A stream skips one offset at each new segment; a larger jump after re-attaching means entries
# were removed (retention) while the link was down.
GAP_TOLERANCE: Final = 16
POSITION_SAVE_INTERVAL: Final = 1.0


class _Phase(Enum):
    PREFILL = "prefill"
    LIVE = "live"


@dataclass(slots=True)
class _Attachment:
    start: int | None  # the exact offset asked for, when it is a number
    since: float  # loop time of the attach
    verify: Position | None = None  # re-attached at this entry, read before: it must come back as is
    tag: str | None = None  # known once basic.consume returned (deliveries may come before that)
    seen: bool = False


class EventConsumer:
    """Reads the shared stream and hands each entry to the hub's ``EventLog``.

    ``start()``/``stop()`` bracket its life (both idempotent); ``is_connected``, ``is_consuming``
    and ``is_caught_up`` are for readiness; ``fatal_error`` is set when the broker rejects our
    configuration, after which it stays stopped (``on_fatal`` is called once).
    """

    def __init__(
        self,
        settings: Settings,
        event_log: EventLog,
        *,
        heartbeat_seconds: int = 20,
        reconnect_interval_seconds: float = 2.0,
        watchdog_interval_seconds: float = 5.0,
        operation_timeout_seconds: float = 10.0,
        first_delivery_timeout_seconds: float = 10.0,
        send_attempts: int = 3,
        send_retry_delay_seconds: float = 0.05,
        on_fatal: Any = None,
        writes: WriteCoalescing | None = None,
    ) -> None:
        if send_attempts < 1:
            raise ValueError("send_attempts must be at least 1")
        self._settings = settings
        self._log = event_log
        self._topology = Topology.from_settings(settings)
        self.connection_name: Final = f"smartscheduler-realtime:{settings.instance_id}"
        self._url = amqp_url(
            settings.amqp_url,
            heartbeat_seconds=heartbeat_seconds,
            connection_name=self.connection_name,
            reconnect_interval_seconds=reconnect_interval_seconds,
        )
        self._link = BrokerLink(
            self._url,
            prefetch=settings.prefetch_count,
            connect_window_seconds=settings.broker_connect_timeout_seconds,
            operation_timeout=operation_timeout_seconds,
            watchdog_interval=watchdog_interval_seconds,
        )
        self._operation_timeout = operation_timeout_seconds
        self._first_delivery_timeout = first_delivery_timeout_seconds
        self._send_attempts = send_attempts
        self._send_retry_delay = send_retry_delay_seconds
        self._on_fatal = on_fatal
        self._writes: WriteCoalescing = writes if writes is not None else _NoCoalescing()
        self._dedup = DuplicateFilter(settings.dedup_window_seconds, settings.dedup_max_entries)
        self._settler = Settler(
            instance_id=settings.instance_id, source=self._topology.stream, timeout=operation_timeout_seconds
        )
        self._positions = PositionStore(self._topology.position_queue, timeout=operation_timeout_seconds)
        self._publish_channel: AbstractChannel | None = None

        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._type_metrics: dict[str, _TypeMetrics] = {}
        self._phase = _Phase.PREFILL
        self._saved: SavedPosition | None = None
        self._loaded_saved = False
        self._marker_token: str | None = None
        self._from_first = False
        self._attachment: _Attachment | None = None
        self._last_arrival = float("-inf")  # loop time of the last delivery
        self._expected: int | None = None  # offset after the last entry read
        self._last: Position | None = None  # the last entry read (re-attaching starts there)
        self._live_position: Position | None = None  # last entry read while live
        self._caught_up = asyncio.Event()
        self._holding = False  # this consumer holds the write batch (while draining a backlog)
        self._accepting = False
        self._handling = False
        self._stopping = False
        self._stop_requested = asyncio.Event()  # ends the grace wait at once
        self._started_at: float | None = None
        self._fatal: BrokerConfigurationError | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._saver_task: asyncio.Task[None] | None = None
        self._watch_tasks: set[asyncio.Task[None]] = set()

    # --- readiness ---------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Connected to the broker (channels restored). ``/readyz`` requires this."""
        return self._link.is_connected

    @property
    def is_consuming(self) -> bool:
        """A consumer is registered on the stream."""
        return self._link.is_consuming

    @property
    def is_caught_up(self) -> bool:
        """The history holds the log up to where this instance starts delivering (``/readyz``)."""
        return self._caught_up.is_set()

    @property
    def fatal_error(self) -> BrokerConfigurationError | None:
        return self._fatal

    @property
    def stream_name(self) -> str:
        return self._topology.stream

    async def wait_connected(self) -> None:
        await self._link.wait_connected()

    async def wait_consuming(self) -> None:
        await self._link.wait_consuming()

    async def wait_caught_up(self) -> None:
        await self._caught_up.wait()

    # --- lifetime ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting and consuming in the background; returns at once."""
        if self._main_task is not None:
            raise RuntimeError("EventConsumer.start() called twice")
        self._started_at = asyncio.get_running_loop().time()
        self._accepting = True
        self._worker_task = asyncio.create_task(self._work(), name="event-consumer-worker")
        self._saver_task = asyncio.create_task(self._save_positions(), name="event-consumer-positions")
        self._main_task = asyncio.create_task(self._run(), name="event-consumer-supervisor")
        log.info(
            "consumer.starting",
            broker=redact(self._url),
            stream=self._topology.stream,
            graceSeconds=self._settings.consume_grace_seconds,
            prefetch=self._settings.prefetch_count,
        )

    async def stop(self) -> None:
        """Stop within ``SHUTDOWN_TIMEOUT_SECONDS``: no new deliveries, finish the entry in hand, save
        the position, close the connection. Entries read but not handled are read again after a
        restart (the saved position says where to continue)."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_requested.set()
        self._accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.shutdown_timeout_seconds

        def remaining() -> float:
            return max(0.0, deadline - loop.time())

        await _cancel(self._main_task)
        for task in list(self._watch_tasks):
            await _cancel(task)
        await self._link.cancel_consumer(timeout=min(remaining(), self._operation_timeout))
        worker = self._worker_task
        if worker is not None and not worker.done():
            if self._handling:
                # The worker leaves its loop after the current entry because _accepting is False.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(worker), timeout=remaining())
            await _cancel(worker)
        await _cancel(self._saver_task)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._save_position(), timeout=min(remaining(), self._operation_timeout))
        await self._link.close(timeout=remaining())
        log.info("consumer.stopped", unhandled=self._inbox.qsize(), position=str(self._live_position))

    async def _run(self) -> None:
        try:
            await self._link.run(self._establish)
        except BrokerConfigurationError as error:
            await self._fail(error)

    async def _fail(self, error: BrokerConfigurationError) -> None:
        self._fatal = error
        self._accepting = False
        log.error("consumer.stopped_by_configuration_error", error=str(error))
        await self._link.close(timeout=self._operation_timeout)
        if self._on_fatal is not None:
            self._on_fatal(error)

    # --- attaching ---------------------------------------------------------------------------

    async def _establish(self, channels: LinkChannels) -> str | None:
        """Declare, learn where we were, write a marker, and attach to the stream at the right offset."""
        timeout = self._operation_timeout
        declared = await declare_topology(channels.consume, self._topology, timeout=timeout)
        # The dead-letter exchange handle used for publishing lives on the confirming channel.
        self._settler.dead_letter_exchange = await channels.publish.declare_exchange(
            self._topology.dead_letter_exchange,
            ExchangeType.FANOUT,
            durable=True,
            timeout=timeout,
            robust=False,
        )
        self._publish_channel = channels.publish
        if not self._loaded_saved:
            self._saved = await self._positions.load(declared.position_queue)
            self._loaded_saved = True
            log.info("consumer.saved_position", position=str(self._saved.position) if self._saved else None)
        await self._write_marker(channels.publish)
        if self._stopping:
            return None
        offset = self._attach_offset()
        attachment = self._attachment = _Attachment(
            offset if isinstance(offset, int) else None,
            asyncio.get_running_loop().time(),
            verify=self._last if isinstance(offset, int) else None,
        )
        tag = attachment.tag = await declared.stream.consume(
            self._on_delivery, arguments={"x-stream-offset": offset}, timeout=timeout, robust=False
        )
        watch = asyncio.create_task(self._watch_first_delivery(attachment), name="event-consumer-watch")
        self._watch_tasks.add(watch)
        watch.add_done_callback(self._watch_tasks.discard)
        log.info("consumer.attached", stream=self._topology.stream, offset=str(offset), consumerTag=tag)
        return tag

    def _attach_offset(self) -> int | str | datetime:
        if self._last is not None:
            # After any loss: at the last entry read, which must come back unchanged. Asking for the
            # next one could not tell a stream recreated and grown past that offset from the same one.
            return self._last.offset
        if self._from_first:
            return "first"  # the stream was recreated and nothing of the new one is read yet
        window = self._settings.history_window_seconds
        saved = self._saved
        if saved is not None and saved.saved_at < time.time() - window:
            # Away longer than the history window: deliver everything since the saved position.
            return saved.position.offset + 1
        return datetime.fromtimestamp(time.time() - window, UTC)

    async def _write_marker(self, channel: AbstractChannel) -> None:
        """A marker makes the log non-empty and tells this instance when it has read up to "now"."""
        token = f"{self._settings.instance_id}:{uuid.uuid4().hex}"
        await channel.default_exchange.publish(
            Message(b"", headers={"x-realtime-marker": token}, delivery_mode=DeliveryMode.PERSISTENT),
            routing_key=self._topology.stream,
            timeout=self._operation_timeout,
        )
        self._marker_token = token

    async def _watch_first_delivery(self, attachment: _Attachment) -> None:
        """Nothing at all arrives when the asked offset lies beyond the end of the stream (the broker
        waits silently for it): then the stream was recreated, and this instance starts it afresh."""
        await asyncio.sleep(self._first_delivery_timeout)
        if self._last_arrival >= attachment.since or attachment is not self._attachment or self._stopping:
            return
        log.warning("log.beyond_end", asked=attachment.start, stream=self._topology.stream)
        await self._start_afresh()

    async def _start_afresh(self) -> None:
        """The stream was recreated: forget where we were and read the new one from its first entry."""
        self._reset("recreated")
        self._from_first = True
        self._expected = None
        self._last = None
        self._attachment = None
        await self._link.restart_consumer("recreated")

    def _reset(self, reason: str) -> None:
        metrics.LOG_RESETS.labels(reason=reason).inc()
        self._writes.flush()
        self._log.reset(reason)

    # --- the worker: one entry at a time -----------------------------------------------------

    async def _on_delivery(self, message: AbstractIncomingMessage) -> None:
        # No await before put_nowait: callbacks start in delivery order, so the inbox keeps it.
        if self._accepting:
            self._last_arrival = asyncio.get_running_loop().time()
            self._inbox.put_nowait(message)

    async def _work(self) -> None:
        while self._accepting:
            message = await self._inbox.get()
            if not self._accepting:
                break
            self._handling = True
            try:
                await self._drain(message)
            finally:
                self._handling = False

    async def _drain(self, message: AbstractIncomingMessage) -> None:
        """Handle ``message`` and whatever the prefetch window already put behind it, in order.

        Credit goes back every half prefetch window and when the inbox is empty. While a backlog
        waits in the inbox, socket writes are held (``WriteCoalescing``) so that a connection in the
        groups of several queued events gets them in one write; they are flushed before credit and
        whenever nothing more is queued.
        """
        inbox = self._inbox
        writes = self._writes
        credit_every = max(1, self._settings.prefetch_count // 2)
        uncredited = 0
        last: AbstractIncomingMessage | None = None
        info = _enabled(logging.INFO)
        try:
            while True:
                if await self._handle(message, info=info):
                    last = message
                    uncredited += 1
                if uncredited >= credit_every and last is not None:
                    writes.flush()
                    await self._settler.credit(last)
                    uncredited = 0
                elif inbox.empty():
                    writes.flush()
                elif not self._holding:
                    writes.hold()
                    self._holding = True
                # One turn of the event loop per entry: a stop() (SIGTERM) takes effect after it,
                # before the next entry is taken.
                await asyncio.sleep(0)
                if not self._accepting:
                    break
                try:
                    message = inbox.get_nowait()
                except asyncio.QueueEmpty:
                    break
            if last is not None and uncredited:
                writes.flush()
                await self._settler.credit(last)
        finally:
            self._stop_holding()

    def _stop_holding(self) -> None:
        """Write what is held and stop holding: before anything that waits (other tasks' writes, such
        as a reconnecting client's handshake reply, must not wait with it)."""
        if self._holding:
            self._holding = False
            self._writes.release()

    async def _handle(self, message: AbstractIncomingMessage, *, info: bool) -> bool:
        """Handle one delivery; True when it should be credited (it came from a live channel)."""
        if _closed_channel(message):
            return False  # from a channel that is gone: the new consumer reads it again
        delivery = _delivery(message)
        if delivery is None:
            log.error("log.entry_without_offset", stream=self._topology.stream)
            return True
        attachment = self._attachment
        if attachment is None or (attachment.tag is not None and message.consumer_tag != attachment.tag):
            return False  # from a consumer given up on (the stream was recreated): the new one reads anew
        if not attachment.seen:
            attachment.seen = True
            if not await self._check_reattach(attachment, delivery):
                return True  # the stream was recreated: the new consumer reads it from the start
        if self._expected is not None and delivery.offset < self._expected:
            return True  # read already (a re-attach starts at the last entry read)
        try:
            await self._process(delivery, message, info=info)
        except Exception:
            # A fault of ours or of the hub must not stop the worker: this entry is counted, logged
            # and passed over; every other entry goes on being delivered.
            metrics.ENTRY_FAILURES.inc()
            log.exception("log.entry_failed", offset=delivery.offset)
        self._expected = delivery.offset + 1
        self._last = Position(delivery.offset, delivery.check)
        metrics.LOG_OFFSET.set(delivery.offset)
        return True

    async def _check_reattach(self, attachment: _Attachment, delivery: Delivery) -> bool:
        """The first entry after attaching: is this still the log we were reading? False when it was
        recreated (and a fresh consumer is on its way)."""
        verify = attachment.verify
        if verify is not None:
            if delivery.offset == verify.offset and delivery.check != verify.check:
                log.warning("log.recreated", offset=delivery.offset, was=str(verify), now=delivery.check)
                await self._start_afresh()
                return False
            if delivery.offset > verify.offset:
                # The last entry read is gone: retention removed that stretch while the link was down.
                log.warning("log.gap", expected=verify.offset, got=delivery.offset)
                self._reset("gap")
        elif attachment.start is not None and delivery.offset > attachment.start + GAP_TOLERANCE:
            # Attached after a saved position (a long restart): a jump past a segment boundary's gap
            # means the stretch after it was removed meanwhile.
            log.warning("log.gap", expected=attachment.start, got=delivery.offset)
            self._reset("gap")
        return True

    async def _process(self, delivery: Delivery, message: AbstractIncomingMessage, *, info: bool) -> None:
        outcome = classify(delivery, duplicates=self._dedup, max_event_bytes=self._settings.max_event_bytes)
        if self._phase is _Phase.PREFILL:
            await self._advance_prefill(delivery, outcome)
        live = self._phase is _Phase.LIVE
        match outcome:
            case Deliver():
                record = outcome.record(delivery)
                self._log.record(record)
                self._dedup.remember(outcome.key)
                if live:
                    await self._deliver(outcome, record, message, info=info)
            case DeadLetter():
                self._log.record(delivery.record())
                self._dedup.remember(outcome.key)
                if live:
                    metrics.EVENTS_CONSUMED.labels(type=metrics.INVALID).inc()
                    self._stop_holding()  # nothing handed off waits behind a broker round trip
                    bound = log.bind(**_message_fields(message, delivery))
                    await self._settler.dead_letter(
                        message, reason=outcome.reason, detail=outcome.detail, bound=bound
                    )
            case Duplicate():
                self._log.record(delivery.record())
                if live:
                    metrics.EVENTS_DUPLICATE.inc()
                    log.info("message.duplicate_skipped", **_message_fields(message, delivery))
            case Marker():
                self._log.record(delivery.record())
        if live:
            self._live_position = Position(delivery.offset, delivery.check)

    async def _advance_prefill(self, delivery: Delivery, outcome: object) -> None:
        """Still filling the history: is this entry the first one to deliver?"""
        saved = self._saved
        if saved is not None:
            if delivery.offset == saved.position.offset and delivery.check != saved.position.check:
                log.warning("log.saved_position_of_another_stream", saved=str(saved.position))
                self._saved = saved = None
            elif delivery.offset > saved.position.offset:
                self._mark_caught_up()
                if await self._await_grace():
                    self._phase = _Phase.LIVE
                return
        if isinstance(outcome, Marker) and outcome.token == self._marker_token:
            if saved is not None:
                # Our own marker, written at start, lies at or before the saved offset: the stream
                # ends before where this instance was (it was recreated while the instance was
                # down), so the saved position names nothing here.
                log.warning(
                    "log.saved_position_beyond_end", saved=str(saved.position), marker=delivery.offset
                )
                self._saved = None
            self._mark_caught_up()
            self._phase = _Phase.LIVE

    def _mark_caught_up(self) -> None:
        if not self._caught_up.is_set():
            log.info("consumer.caught_up", position=str(self._live_position))
            self._caught_up.set()

    async def _await_grace(self) -> bool:
        """Wait out the rest of the grace period; False when ``stop()`` came first (deliver nothing)."""
        if self._started_at is None:
            return not self._stopping
        remaining = (
            self._started_at + self._settings.consume_grace_seconds - asyncio.get_running_loop().time()
        )
        if remaining > 0:
            self._stop_holding()
            log.info("consumer.grace_wait", seconds=round(remaining, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), timeout=remaining)
        return not self._stopping

    async def _deliver(
        self, outcome: Deliver, record: LogRecord, message: AbstractIncomingMessage, *, info: bool
    ) -> None:
        event = outcome.event
        by_type = self._type_metrics.get(event.type)
        if by_type is None:
            by_type = self._type_metrics[event.type] = _TypeMetrics(event.type)
        by_type.consumed.inc()
        for attempt in range(1, self._send_attempts + 1):
            try:
                delivered = self._log.deliver(record)
                break
            except Exception as error:  # the hub is another component; its failure must not stop us
                metrics.SEND_FAILURES.inc()
                log.warning(
                    "event.send_failed",
                    **_message_fields(message, None),
                    attempt=attempt,
                    of=self._send_attempts,
                    error=f"{type(error).__name__}: {error}",
                    exc_info=attempt == self._send_attempts,
                )
                if attempt < self._send_attempts:
                    self._stop_holding()
                    await asyncio.sleep(self._send_retry_delay * 2 ** (attempt - 1))
        else:
            bound = log.bind(**_message_fields(message, None))
            detail = (
                f"handing the event to the hub failed {self._send_attempts} times; see the instance's logs"
            )
            await self._settler.dead_letter(message, reason=SEND_FAILED, detail=detail, bound=bound)
            return
        by_type.delivered.inc(delivered)
        if record.published_at is not None:
            by_type.latency.observe(max(0.0, time.time() - record.published_at))
        if info:
            log.info(
                "event.delivered",
                **_message_fields(message, None),
                **_log_fields(outcome),
                position=str(record.position),
                connections=delivered,
            )

    # --- positions ---------------------------------------------------------------------------

    async def _save_positions(self) -> None:
        while True:
            await asyncio.sleep(POSITION_SAVE_INTERVAL)
            await self._save_position()

    async def _save_position(self) -> None:
        position, channel = self._live_position, self._publish_channel
        if position is None or channel is None or channel.is_closed:
            return
        self._writes.flush()  # what is saved as delivered has been handed to the sockets
        await self._positions.save(channel, position)


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


def _delivery(message: AbstractIncomingMessage) -> Delivery | None:
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


def _closed_channel(message: AbstractIncomingMessage) -> bool:
    try:
        channel = message.channel
    except ChannelInvalidStateError:
        return True
    return bool(getattr(channel, "is_closed", False))


def _enabled(level: int) -> bool:
    """Whether the service's logger emits ``level`` (checked once per batch, not per message)."""
    try:
        return bool(log.isEnabledFor(level))
    except AttributeError:  # a structlog configuration without stdlib levels: assume it does
        return True


def _message_fields(message: AbstractIncomingMessage, delivery: Delivery | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"messageId": message.message_id, "routingKey": message.routing_key}
    if delivery is not None:
        fields["offset"] = delivery.offset
    return fields


def _log_fields(outcome: Deliver) -> dict[str, Any]:
    event = outcome.event
    fields: dict[str, Any] = {"type": event.type, "jobId": event.job_id, "region": event.region}
    for name in ("request_id", "contractor_id", "assignment_id"):
        value = getattr(event, name, None)
        if value is not None:
            fields[_camel(name)] = value
    return fields


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait for it, without swallowing a cancellation of the caller."""
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.error("background_task.failed", task=task.get_name(), exc_info=task.exception())
