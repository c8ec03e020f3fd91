"""EventConsumer: the shared stream → validated events → the hub, in log order, resumable anywhere.

Every instance reads the same RabbitMQ stream (``STREAM_NAME``), so an event has one offset on all
of them. This module wires the parts and brackets their life; each part has its own module:

- ``consumers.link`` keeps the connection and exactly one stream consumer, and calls
  ``consumers.attach`` to (re-)attach it at the right offset after any broker trouble;
- ``consumers.inbox`` keeps deliveries in stream order for ``consumers.worker``, which handles one
  entry at a time: classified, recorded in the hub's history, delivered once live, credited in bulk;
- the position this instance last delivered is saved here, every second and at ``stop()``, so that
  a restart continues after it (``consumers.positions``).

Phases. A starting instance first *prefills*: it reads the last ``HISTORY_WINDOW_SECONDS`` of the
stream into the history without delivering anything, up to the position it last delivered before
it went down or, for a new instance, up to a marker it wrote into the log at start. It is then
caught up (``/readyz``), waits out ``CONSUME_GRACE_SECONDS`` since it started so that clients can
rejoin, and goes *live*: the backlog published while it was away and everything after is delivered.

Rule: the worker never waits for a client; nothing raises into the caller except ``start()``
misuse; broker trouble shows as ``is_connected`` / ``is_consuming`` / ``is_caught_up``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

import structlog

from broker.connection import amqp_url, redact
from broker.errors import BrokerConfigurationError
from broker.topology import Topology
from config.settings import Settings
from consumers.attach import Attacher
from consumers.inbox import Inbox
from consumers.link import BrokerLink
from consumers.ports import EventLog, WriteCoalescing
from consumers.positions import PositionStore
from consumers.settle import Settler
from consumers.worker import Worker

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
        self._on_fatal = on_fatal
        self._writes: WriteCoalescing = writes if writes is not None else _NoCoalescing()
        settler = Settler(
            instance_id=settings.instance_id, source=self._topology.stream, timeout=operation_timeout_seconds
        )
        self._positions = PositionStore(self._topology.position_queue, timeout=operation_timeout_seconds)
        self._inbox = Inbox()
        self._stop_requested = asyncio.Event()  # set by stop(): no new attach; the grace wait ends at once
        self._attacher = Attacher(
            settings,
            event_log,
            self._writes,
            topology=self._topology,
            link=self._link,
            settler=settler,
            positions=self._positions,
            inbox=self._inbox,
            stopping=self._stop_requested,
            operation_timeout_seconds=operation_timeout_seconds,
            first_delivery_timeout_seconds=first_delivery_timeout_seconds,
        )
        self._worker = Worker(
            settings,
            event_log,
            self._writes,
            stream=self._topology.stream,
            inbox=self._inbox,
            attacher=self._attacher,
            settler=settler,
            stopping=self._stop_requested,
            send_attempts=send_attempts,
            send_retry_delay_seconds=send_retry_delay_seconds,
        )
        self._fatal: BrokerConfigurationError | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._saver_task: asyncio.Task[None] | None = None

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
        return self._worker.caught_up.is_set()

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
        await self._worker.caught_up.wait()

    # --- lifetime ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting and consuming in the background; returns at once."""
        if self._main_task is not None:
            raise RuntimeError("EventConsumer.start() called twice")
        started_at = asyncio.get_running_loop().time()
        self._inbox.accepting = True
        self._worker_task = asyncio.create_task(self._worker.run(started_at), name="event-consumer-worker")
        self._saver_task = asyncio.create_task(self._save_positions(), name="event-consumer-positions")
        self._main_task = asyncio.create_task(self._run(), name="event-consumer-supervisor")
        log.info(
            "consumer.starting",
            broker=redact(self._url),
            stream=self._topology.stream,
            graceSeconds=self._settings.consume_grace_seconds,
            prefetch=self._settings.prefetch_count,
        )

    async def stop(self, timeout: float | None = None) -> None:
        """Stop within ``timeout`` (default ``SHUTDOWN_TIMEOUT_SECONDS``): no new deliveries, finish the
        entry in hand, save the position, close the connection. Entries read but not handled are read
        again after a restart (the saved position says where to continue)."""
        if self._stop_requested.is_set():
            return
        self._stop_requested.set()
        self._inbox.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._settings.shutdown_timeout_seconds if timeout is None else timeout)

        def remaining() -> float:
            return max(0.0, deadline - loop.time())

        await _cancel(self._main_task)
        for task in list(self._attacher.watches):
            await _cancel(task)
        await self._link.cancel_consumer(timeout=min(remaining(), self._operation_timeout))
        worker = self._worker_task
        if worker is not None and not worker.done():
            if self._worker.handling:
                # The worker leaves its loop after the current entry because the inbox stopped accepting.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(worker), timeout=remaining())
            await _cancel(worker)
        await _cancel(self._saver_task)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._save_position(), timeout=min(remaining(), self._operation_timeout))
        await self._link.close(timeout=remaining())
        log.info(
            "consumer.stopped",
            unhandled=len(self._inbox),
            position=str(self._worker.live_position),
        )

    async def _run(self) -> None:
        try:
            await self._link.run(self._attacher.establish)
        except BrokerConfigurationError as error:
            await self._fail(error)

    async def _fail(self, error: BrokerConfigurationError) -> None:
        self._fatal = error
        self._inbox.accepting = False
        log.error("consumer.stopped_by_configuration_error", error=str(error))
        await self._link.close(timeout=self._operation_timeout)
        if self._on_fatal is not None:
            self._on_fatal(error)

    # --- positions ---------------------------------------------------------------------------

    async def _save_positions(self) -> None:
        while True:
            await asyncio.sleep(POSITION_SAVE_INTERVAL)
            await self._worker.credit_idle()
            await self._save_position()

    async def _save_position(self) -> None:
        position, channel = self._worker.live_position, self._attacher.publish_channel
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


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait for it, without swallowing a cancellation of the caller."""
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.error("background_task.failed", task=task.get_name(), exc_info=task.exception())
