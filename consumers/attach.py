"""Attaching to the stream at the right offset, every time the broker link (re-)establishes it.

``BrokerLink`` calls ``Attacher.establish`` whenever no consumer is registered: it declares the
topology, learns once where this instance was (``consumers.positions``), writes a marker into the
log, and registers the stream consumer at the offset ``LogPlace`` chooses — the history window at
start, the last entry read after any loss.

Losing the place. If the stream no longer has the stretch after the last entry read (retention
removed it while the link was down) or no longer reaches that offset (it was deleted and
recreated), the hub is told to reset (``EventLog.reset``: history forgotten, position-tracking
clients asked to resume). A gap or a recreated stream shows in the first entry after an attach (the
worker asks ``LogPlace``); an offset beyond the end of a recreated stream shows as nothing arriving
at all, which the first-delivery watch here notices.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import structlog
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.abc import AbstractChannel

from broker.topology import Topology, declare_topology
from config.settings import Settings
from consumers import metrics
from consumers.amqp import consume
from consumers.inbox import Inbox
from consumers.link import BrokerLink, LinkChannels
from consumers.place import Attachment, Catchup, LogPlace
from consumers.ports import EventLog, WriteCoalescing
from consumers.positions import PositionStore
from consumers.settle import Settler

__all__ = ["Attacher"]

log = structlog.get_logger(__name__)


class Attacher:
    """Where the stream consumer is attached, and what happens when that place is lost.

    ``place`` and ``catchup`` are shared with the worker, which records every entry it reads in them.
    """

    def __init__(
        self,
        settings: Settings,
        event_log: EventLog,
        writes: WriteCoalescing,
        *,
        topology: Topology,
        link: BrokerLink,
        settler: Settler,
        positions: PositionStore,
        inbox: Inbox,
        stopping: asyncio.Event,
        operation_timeout_seconds: float,
        first_delivery_timeout_seconds: float,
    ) -> None:
        self._settings = settings
        self._log = event_log
        self._writes = writes
        self._topology = topology
        self._link = link
        self._settler = settler
        self._positions = positions
        self._inbox = inbox
        self._stopping = stopping
        self._operation_timeout = operation_timeout_seconds
        self._first_delivery_timeout = first_delivery_timeout_seconds
        self.place = LogPlace()
        self.catchup = Catchup()
        self.publish_channel: AbstractChannel | None = None  # the confirming channel, once established
        self.watches: set[asyncio.Task[None]] = set()  # first-delivery watches still running
        self._loaded_saved = False

    async def establish(self, channels: LinkChannels) -> str | None:
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
        self.publish_channel = channels.publish
        if not self._loaded_saved:
            saved = self.catchup.saved = await self._positions.load(declared.position_queue)
            self._loaded_saved = True
            log.info("consumer.saved_position", position=str(saved.position) if saved else None)
        await self._write_marker(channels.publish)
        if self._stopping.is_set():
            return None
        offset = self.place.attach_offset(
            self.catchup.saved, now=time.time(), window_seconds=self._settings.history_window_seconds
        )
        attachment = self.place.attach(offset, asyncio.get_running_loop().time())
        tag = attachment.tag = await consume(
            declared.stream, self._inbox.put, arguments={"x-stream-offset": offset}, timeout=timeout
        )
        watch = asyncio.create_task(self._watch_first_delivery(attachment), name="event-consumer-watch")
        self.watches.add(watch)
        watch.add_done_callback(self.watches.discard)
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
        self.catchup.marker = token

    async def _watch_first_delivery(self, attachment: Attachment) -> None:
        """Nothing at all arrives when the asked offset lies beyond the end of the stream (the broker
        waits silently for it): then the stream was recreated, and this instance starts it afresh."""
        await asyncio.sleep(self._first_delivery_timeout)
        if self._inbox.last_arrival >= attachment.since or attachment is not self.place.attachment:
            return
        if self._stopping.is_set():
            return
        log.warning("log.beyond_end", asked=attachment.start, stream=self._topology.stream)
        await self.start_afresh()

    async def start_afresh(self) -> None:
        """The stream was recreated: forget where we were and read the new one from its first entry."""
        self.reset("recreated")
        self.place.start_afresh()
        await self._link.restart_consumer("recreated")

    def reset(self, reason: str) -> None:
        """Tell the hub that the log was interrupted (what it holds no longer continues)."""
        metrics.LOG_RESETS.labels(reason=reason).inc()
        self._writes.flush()
        self._log.reset(reason)
