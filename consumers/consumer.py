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
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from broker.connection import amqp_url, redact
from broker.errors import BrokerConfigurationError
from broker.topology import Topology, declare_topology
from config.settings import Settings
from consumers import metrics
from consumers.amqp import delivery_of, from_closed_channel, message_fields
from consumers.dedup import DuplicateFilter
from consumers.handling import DeadLetter, Deliver, Delivery, Duplicate, Marker, Outcome, classify
from consumers.handoff import HandOff
from consumers.link import BrokerLink, LinkChannels
from consumers.place import Attachment, Catchup, LogPlace, Step, Verdict
from consumers.ports import EventLog, WriteCoalescing
from consumers.positions import PositionStore
from consumers.settle import Settler
from schemas.log import Position

__all__ = ["EventConsumer"]

log = structlog.get_logger(__name__)

POSITION_SAVE_INTERVAL: Final = 1.0


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
        self._on_fatal = on_fatal
        self._writes: WriteCoalescing = writes if writes is not None else _NoCoalescing()
        self._dedup = DuplicateFilter(settings.dedup_window_seconds, settings.dedup_max_entries)
        self._settler = Settler(
            instance_id=settings.instance_id, source=self._topology.stream, timeout=operation_timeout_seconds
        )
        self._handoff = HandOff(
            event_log,
            self._settler,
            attempts=send_attempts,
            retry_delay_seconds=send_retry_delay_seconds,
            before_waiting=self._stop_holding,
        )
        self._positions = PositionStore(self._topology.position_queue, timeout=operation_timeout_seconds)
        self._publish_channel: AbstractChannel | None = None

        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._place = LogPlace()
        self._catchup = Catchup()
        self._loaded_saved = False
        self._last_arrival = float("-inf")  # loop time of the last delivery
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
            saved = self._catchup.saved = await self._positions.load(declared.position_queue)
            self._loaded_saved = True
            log.info("consumer.saved_position", position=str(saved.position) if saved else None)
        await self._write_marker(channels.publish)
        if self._stopping:
            return None
        offset = self._place.attach_offset(
            self._catchup.saved, now=time.time(), window_seconds=self._settings.history_window_seconds
        )
        attachment = self._place.attach(offset, asyncio.get_running_loop().time())
        tag = attachment.tag = await declared.stream.consume(
            self._on_delivery, arguments={"x-stream-offset": offset}, timeout=timeout, robust=False
        )
        watch = asyncio.create_task(self._watch_first_delivery(attachment), name="event-consumer-watch")
        self._watch_tasks.add(watch)
        watch.add_done_callback(self._watch_tasks.discard)
        log.info("consumer.attached", stream=self._topology.stream, offset=str(offset), consumerTag=tag)
        return tag

    async def _write_marker(self, channel: AbstractChannel) -> None:
        """A marker makes the log non-empty and tells this instance when it has read up to "now"."""
        token = f"{self._settings.instance_id}:{uuid.uuid4().hex}"
        await channel.default_exchange.publish(
            # Timestamped like any entry, so that the history ages it by when it was written.
            Message(
                b"",
                headers={"x-realtime-marker": token},
                delivery_mode=DeliveryMode.PERSISTENT,
                timestamp=datetime.now(UTC),
            ),
            routing_key=self._topology.stream,
            timeout=self._operation_timeout,
        )
        self._catchup.marker = token

    async def _watch_first_delivery(self, attachment: Attachment) -> None:
        """Nothing at all arrives when the asked offset lies beyond the end of the stream (the broker
        waits silently for it): then the stream was recreated, and this instance starts it afresh."""
        await asyncio.sleep(self._first_delivery_timeout)
        if self._last_arrival >= attachment.since or attachment is not self._place.attachment:
            return
        if self._stopping:
            return
        log.warning("log.beyond_end", asked=attachment.start, stream=self._topology.stream)
        await self._start_afresh()

    async def _start_afresh(self) -> None:
        """The stream was recreated: forget where we were and read the new one from its first entry."""
        self._reset("recreated")
        self._place.start_afresh()
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
        place = self._place
        if from_closed_channel(message) or not place.owns(message.consumer_tag):
            return False  # from a consumer that is gone or given up on: the current one reads it again
        delivery = delivery_of(message)
        if delivery is None:
            log.error("log.entry_without_offset", stream=self._topology.stream)
            return True
        verdict = place.first(delivery.offset, delivery.check)
        if verdict is Verdict.RECREATED:
            log.warning("log.recreated", offset=delivery.offset, was=str(place.last), now=delivery.check)
            await self._start_afresh()
            return True  # the new consumer reads the new stream from its start
        if verdict is Verdict.GAP:
            log.warning("log.gap", last=str(place.last), got=delivery.offset)
            self._reset("gap")
        if place.already_read(delivery.offset):
            return True  # a re-attach starts at the last entry read
        try:
            await self._process(delivery, message, info=info)
        except Exception:
            # A fault of ours or of the hub must not stop the worker: this entry is counted, logged
            # and passed over; every other entry goes on being delivered.
            metrics.ENTRY_FAILURES.inc()
            log.exception("log.entry_failed", offset=delivery.offset)
        place.read(delivery.offset, delivery.check)
        metrics.LOG_OFFSET.set(delivery.offset)
        return True

    async def _process(self, delivery: Delivery, message: AbstractIncomingMessage, *, info: bool) -> None:
        outcome = classify(delivery, duplicates=self._dedup, max_event_bytes=self._settings.max_event_bytes)
        live = await self._live(delivery, outcome)
        match outcome:
            case Deliver():
                record = outcome.record(delivery)
                self._log.record(record)
                self._dedup.remember(outcome.key)
                if live:
                    await self._handoff.deliver(outcome, record, message, info=info)
            case DeadLetter():
                self._log.record(delivery.record())
                self._dedup.remember(outcome.key)
                if live:
                    metrics.EVENTS_CONSUMED.labels(type=metrics.INVALID).inc()
                    self._stop_holding()  # nothing handed off waits behind a broker round trip
                    bound = log.bind(**message_fields(message, delivery))
                    await self._settler.dead_letter(
                        message, reason=outcome.reason, detail=outcome.detail, bound=bound
                    )
            case Duplicate():
                self._log.record(delivery.record())
                if live:
                    metrics.EVENTS_DUPLICATE.inc()
                    log.info("message.duplicate_skipped", **message_fields(message, delivery))
            case Marker():
                self._log.record(delivery.record())
        if live:
            self._live_position = Position(delivery.offset, delivery.check)

    async def _live(self, delivery: Delivery, outcome: Outcome) -> bool:
        """Whether this entry is delivered (live), or only recorded (the prefill of a start)."""
        marker = outcome.token if isinstance(outcome, Marker) else None
        step = self._catchup.observe(delivery.offset, delivery.check, marker)
        if step is Step.HISTORY:
            return False
        self._mark_caught_up()
        if step is Step.BACKLOG:
            return await self._await_grace()  # clients rejoin first; nothing is delivered after stop()
        return True

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


def _enabled(level: int) -> bool:
    """Whether the service's logger emits ``level`` (checked once per batch, not per message)."""
    try:
        return bool(log.isEnabledFor(level))
    except AttributeError:  # a structlog configuration without stdlib levels: assume it does
        return True


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait for it, without swallowing a cancellation of the caller."""
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.error("background_task.failed", task=task.get_name(), exc_info=task.exception())
