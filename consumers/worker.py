"""The worker: every entry of the stream, one at a time, strictly in stream order.

One entry, start to end:

1. ``consumers.inbox`` holds what aio-pika delivered; this single worker takes it from there.
2. ``consumers.handling.classify`` decides what the entry is: an event to deliver, a message to
   dead-letter (with the reason), a duplicate of a message id already handled, or a marker.
3. Every entry is recorded in the hub's history (``EventLog.record``), so that any position the
   service hands out can be checked and replayed from; an event is then delivered
   (``EventLog.deliver``) to its groups, with its position for clients that asked for positions.
4. Credit goes back to the stream in bulk (``consumers.settle``), every half prefetch window and
   about once a second; a stream keeps its messages, so "acknowledged" only means "send more".

Phases (prefill → grace → live, see ``consumers.consumer``) are decided here, per entry: recorded
only while ``Catchup`` says the instance is still prefilling; the first entry after that marks it
caught up, and a backlog entry waits out the rest of the grace period before it is delivered.

Rule: the worker never waits for a client, and nothing an entry raises stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import structlog

from config.settings import Settings
from consumers import metrics
from consumers.amqp import DeliveredMessage, delivery_of, from_closed_channel, message_fields
from consumers.attach import Attacher
from consumers.dedup import DuplicateFilter
from consumers.handling import DeadLetter, Deliver, Delivery, Duplicate, Marker, Outcome, classify
from consumers.handoff import HandOff
from consumers.inbox import Inbox
from consumers.place import Step, Verdict
from consumers.ports import EventLog, WriteCoalescing
from consumers.settle import Settler
from schemas.log import Position

__all__ = ["HOLD_MAX_ENTRIES", "Worker"]

log = structlog.get_logger(__name__)

HOLD_MAX_ENTRIES = 50
"""While a backlog drains, the writes of at most this many entries are held before they go out.

Holding lets a connection in the groups of several queued events get them in one write (W2 drains
2-3× faster than the raw floor because of it); the bound keeps what that costs the first of them
in latency small however deep the backlog (a prefetch window of 1,000 would otherwise hold up to
500 entries, the credit cadence). 50 is what holding was bounded by when the window was 100.
"""


class Worker:
    """Takes entries from the inbox until it stops accepting; ``handling`` while one is in hand."""

    def __init__(
        self,
        settings: Settings,
        event_log: EventLog,
        writes: WriteCoalescing,
        *,
        stream: str,
        inbox: Inbox,
        attacher: Attacher,
        settler: Settler,
        stopping: asyncio.Event,
        send_attempts: int,
        send_retry_delay_seconds: float,
    ) -> None:
        self._settings = settings
        self._log = event_log
        self._writes = writes
        self._stream = stream
        self._inbox = inbox
        self._attacher = attacher
        self._place = attacher.place
        self._catchup = attacher.catchup
        self._settler = settler
        self._stopping = stopping  # ends the grace wait at once
        self._dedup = DuplicateFilter(settings.dedup_window_seconds, settings.dedup_max_entries)
        self._handoff = HandOff(
            event_log,
            settler,
            attempts=send_attempts,
            retry_delay_seconds=send_retry_delay_seconds,
            before_waiting=self._stop_holding,
        )
        self.caught_up = asyncio.Event()
        self.live_position: Position | None = None  # last entry read while live
        self.handling = False
        self._holding = False  # this worker holds the write batch (while draining a backlog)
        self._started_at: float | None = None
        # Entries read but not yet credited, and the last of them (credit is ``ack(multiple=True)``).
        self._uncredited = 0
        self._uncredited_last: DeliveredMessage | None = None
        # The entry in hand (one at a time): whether it is live (None: not known yet) and whether it
        # was settled (delivered, dead-lettered or skipped), for what a fault while handling it means.
        self._entry_live: bool | None = None
        self._entry_settled = False

    async def run(self, started_at: float) -> None:
        """Handle entries until the inbox stops accepting; the grace period counts from ``started_at``."""
        self._started_at = started_at
        inbox = self._inbox
        while inbox.accepting:
            message = await inbox.get()
            if not inbox.accepting:
                break
            self.handling = True
            try:
                await self._drain(message)
            finally:
                self.handling = False

    async def _drain(self, message: DeliveredMessage) -> None:
        """Handle ``message`` and whatever the prefetch window already put behind it, in order.

        Credit goes back every half prefetch window (and about once a second, see ``credit``). While
        a backlog waits in the inbox, socket writes are held (``WriteCoalescing``) so that a
        connection in the groups of several queued events gets them in one write; they are flushed
        before credit, whenever nothing more is queued, and every ``HOLD_MAX_ENTRIES`` entries.
        """
        inbox = self._inbox
        writes = self._writes
        credit_every = max(1, self._settings.prefetch_count // 2)
        info = self._settings.log_event_deliveries and _enabled(logging.INFO)
        held = 0  # entries whose writes are held since the last flush
        try:
            while True:
                if await self._handle(message, info=info):
                    self._uncredited_last = message
                    self._uncredited += 1
                if self._uncredited >= credit_every:
                    writes.flush()
                    held = 0
                    await self.credit()
                elif not inbox:
                    writes.flush()
                    held = 0
                else:
                    if not self._holding:
                        writes.hold()
                        self._holding = True
                    held += 1
                    if held >= HOLD_MAX_ENTRIES:
                        writes.flush()
                        held = 0
                if not inbox:
                    break  # the wait for the next entry is the loop's turn (at a steady rate, every entry)
                # One turn of the event loop per queued entry: a stop() (SIGTERM) takes effect after
                # it, before the next entry is taken.
                await asyncio.sleep(0)
                if not inbox.accepting:
                    break
                following = inbox.take()
                if following is None:
                    break
                message = following
        finally:
            self._stop_holding()

    async def credit(self) -> None:
        """Give the stream credit for every entry read so far (one ``ack(multiple=True)``).

        Called every half prefetch window while entries arrive, and by the consumer about once a
        second (``credit_idle``). Not once per drained batch: at a steady rate every entry arrives
        alone, and an ack per entry cost one frame, one write to the broker and a wake of aio-pika's
        writer task per event (issue 12) — for nothing, since a stream keeps its entries and an ack
        only says "send more", and half a window is always left.
        """
        last = self._uncredited_last
        self._uncredited, self._uncredited_last = 0, None
        if last is not None:
            await self._settler.credit(last)

    async def credit_idle(self) -> None:
        """Credit what was read, unless an entry is in hand (its drain credits when it is due)."""
        if not self.handling and self._uncredited:
            await self.credit()

    def _stop_holding(self) -> None:
        """Write what is held and stop holding: before anything that waits (other tasks' writes, such
        as a reconnecting client's handshake reply, must not wait with it)."""
        if self._holding:
            self._holding = False
            self._writes.release()

    async def _handle(self, message: DeliveredMessage, *, info: bool) -> bool:
        """Handle one delivery; True when it should be credited (it came from a live channel)."""
        place = self._place
        if from_closed_channel(message) or not place.owns(message.consumer_tag):
            return False  # from a consumer that is gone or given up on: the current one reads it again
        delivery = delivery_of(message)
        if delivery is None:
            log.error("log.entry_without_offset", stream=self._stream)
            return True
        verdict = place.first(delivery.offset, delivery.check)
        if verdict is Verdict.RECREATED:
            log.warning("log.recreated", offset=delivery.offset, was=str(place.last), now=delivery.check)
            await self._attacher.start_afresh()
            return True  # the new consumer reads the new stream from its start
        if verdict is Verdict.GAP:
            log.warning("log.gap", last=str(place.last), got=delivery.offset)
            self._attacher.reset("gap")
        if place.already_read(delivery.offset):
            return True  # a re-attach starts at the last entry read
        self._entry_live, self._entry_settled = None, False
        try:
            await self._process(delivery, message, info=info)
        except Exception as error:
            # A fault of ours or of the hub must not stop the worker: this entry is counted, logged,
            # dead-lettered unless it was settled already or is not live (what is only recorded at
            # start was dealt with before; live when not known yet, once caught up), and passed
            # over; every other entry goes on being delivered.
            metrics.ENTRY_FAILURES.inc()
            log.exception("log.entry_failed", offset=delivery.offset)
            live = self.caught_up.is_set() if self._entry_live is None else self._entry_live
            if live and not self._entry_settled:
                await self._dead_letter_fault(message, delivery, error)
        place.read(delivery.offset, delivery.check)
        metrics.LOG_OFFSET.set(delivery.offset)
        return True

    async def _dead_letter_fault(
        self, message: DeliveredMessage, delivery: Delivery, error: Exception
    ) -> None:
        """Keep an entry our own code failed on, to replay by hand once the fault is fixed."""
        self._stop_holding()
        try:
            await self._settler.dead_letter(
                message,
                reason=metrics.INTERNAL_ERROR,
                # The type only: an exception's text may quote the body, which logs never carry.
                detail=f"{type(error).__name__} (logged as log.entry_failed)",
                bound=log.bind(**message_fields(message, delivery)),
            )
        except Exception:
            log.exception("message.dead_letter_failed", offset=delivery.offset)

    async def _process(self, delivery: Delivery, message: DeliveredMessage, *, info: bool) -> None:
        outcome = classify(delivery, duplicates=self._dedup, max_event_bytes=self._settings.max_event_bytes)
        live = self._entry_live = await self._live(delivery, outcome)
        match outcome:
            case Deliver():
                record = outcome.record(delivery)
                self._log.record(record)
                self._dedup.remember(outcome.key)
                if live:
                    await self._handoff.deliver(outcome, record, message, info=info)
                    self._entry_settled = True
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
                    self._entry_settled = True
            case Duplicate():
                self._entry_settled = True  # nothing to deliver: a fault after this loses nothing
                self._log.record(delivery.record())
                if live:
                    metrics.EVENTS_DUPLICATE.inc()
                    log.info("message.duplicate_skipped", **message_fields(message, delivery))
            case Marker():
                self._entry_settled = True
                self._log.record(delivery.record())
        if live:
            self.live_position = Position(delivery.offset, delivery.check)

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
        if not self.caught_up.is_set():
            log.info("consumer.caught_up", position=str(self.live_position))
            self.caught_up.set()

    async def _await_grace(self) -> bool:
        """Wait out the rest of the grace period; False when ``stop()`` came first (deliver nothing)."""
        stopping = self._stopping
        if self._started_at is None:
            return not stopping.is_set()
        remaining = (
            self._started_at + self._settings.consume_grace_seconds - asyncio.get_running_loop().time()
        )
        if remaining > 0:
            self._stop_holding()
            log.info("consumer.grace_wait", seconds=round(remaining, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=remaining)
        return not stopping.is_set()


def _enabled(level: int) -> bool:
    """Whether the service's logger emits ``level`` (checked once per batch, not per message)."""
    check = getattr(log, "is_enabled_for", None)  # structlog's own filtering logger (the service's)
    if check is None:
        check = getattr(log, "isEnabledFor", None)  # through the standard library (the tests')
    return True if check is None else bool(check(level))
