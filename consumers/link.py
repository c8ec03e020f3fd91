"""Keeping the broker link alive: one connection, two channels, and always exactly one consumer.

``BrokerLink.run(establish)`` connects (retrying in windows while the broker is down — the hub keeps
serving meanwhile), then loops: whenever no consumer is registered — at the start, after a
reconnect, after the broker cancelled the consumer (stream deleted), after a channel error, or when
the periodic watchdog finds none — it opens what is missing and calls ``establish``, which declares
the topology and attaches the consumer. One code path for every way a consumer is lost.

Consumers are registered with ``robust=False``: aio-pika's own restore would re-subscribe with the
*original* arguments, i.e. re-read a stream from where the first attach started (research against
RabbitMQ 3.10 / aio-pika 10: a robust stream consumer replays everything after a reconnect).
``establish`` re-attaches at the right offset instead.

A link that goes silent without closing (a proxy that swallows bytes) is noticed by a heartbeat
watch (``broker.heartbeat``): no frame from the broker for 2 × the heartbeat, and the link is
marked down (``/readyz`` 503) and its connection closed, so the reconnect above takes over.

Rule: nothing here raises into the caller except ``consumers.errors.BrokerConfigurationError`` (a
configuration the broker refuses: retrying cannot help); broker trouble shows as ``is_connected`` /
``is_consuming``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, cast

import aiormq.abc
import aiormq.exceptions
import structlog
from aio_pika.abc import AbstractRobustChannel
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, ChannelInvalidStateError
from aiormq import Channel as UnderlayChannel
from aiormq import spec
from yarl import URL

from broker.connection import JitteredRobustConnection, connect_with_retry, redact
from broker.heartbeat import BrokerSilentError, SilenceWatch
from consumers import metrics

__all__ = ["TRANSIENT", "BrokerLink", "LinkChannels"]

log = structlog.get_logger(__name__)

TRANSIENT: Final = (*CONNECTION_EXCEPTIONS, TimeoutError)
"""Broker or network trouble that a later attempt may not have: retried, never fatal."""


@dataclass(frozen=True, slots=True)
class LinkChannels:
    """The channels ``establish`` works with: one to consume on (with a prefetch), one with confirms."""

    consume: AbstractRobustChannel
    publish: AbstractRobustChannel


Establish = Callable[[LinkChannels], Awaitable[str | None]]
"""Declare what is needed and register the consumer; its tag, or None when stopping."""


class BrokerLink:
    def __init__(
        self,
        url: URL,
        *,
        prefetch: int,
        connect_window_seconds: float,
        operation_timeout: float,
        watchdog_interval: float,
    ) -> None:
        self._url = url
        self._prefetch = prefetch
        self._connect_window = connect_window_seconds
        self._operation_timeout = operation_timeout
        self._watchdog_interval = watchdog_interval
        self._connection: JitteredRobustConnection | None = None
        self._consume_channel: AbstractRobustChannel | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._consumer_tag: str | None = None
        self._consumer_channel: UnderlayChannel | None = None
        # Set by restart_consumer(); an establish that was in flight meanwhile drops its consumer.
        self._restart_requested = False
        self._link_ready = asyncio.Event()
        self._consuming = asyncio.Event()
        self._wake = asyncio.Event()
        self._wake_cause = "watchdog"
        self._stopping = False
        self._silenced: object | None = None  # the aiormq connection the heartbeat watch closed

    # --- state ---------------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._link_ready.is_set()

    @property
    def is_consuming(self) -> bool:
        return self._consuming.is_set() and self._consumer_alive()

    @property
    def consumer_tag(self) -> str | None:
        return self._consumer_tag

    @property
    def publish_channel(self) -> AbstractRobustChannel | None:
        return self._publish_channel

    async def wait_connected(self) -> None:
        await self._link_ready.wait()

    async def wait_consuming(self) -> None:
        await self._consuming.wait()

    async def restart_consumer(self, cause: str) -> None:
        """Drop the consumer and let the loop establish a fresh one (e.g. to attach somewhere else)."""
        channel, tag = self._consumer_channel, self._consumer_tag
        self._consumer_tag = None
        self._restart_requested = True  # also an establish in flight: what it attaches is given up on
        if channel is not None and tag is not None and not channel.is_closed:
            with contextlib.suppress(*TRANSIENT):
                await asyncio.wait_for(channel.basic_cancel(tag), timeout=self._operation_timeout)
        self._poke(cause)

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, establish: Establish) -> None:
        """Connect, then keep one consumer registered until ``stop()``."""
        connection = await self._connect()
        self._connection = connection
        connection.close_callbacks.add(self._on_connection_closed)
        connection.reconnect_callbacks.add(self._on_reconnected)
        self._set_link(up=True)
        watch = asyncio.create_task(self._watch_heartbeats(), name="broker-heartbeat-watch")
        try:
            await self._maintain(establish)
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def _connect(self) -> JitteredRobustConnection:
        window = self._connect_window
        while True:
            try:
                return await connect_with_retry(
                    self._url,
                    window_seconds=window,
                    attempt_timeout_seconds=min(self._operation_timeout, window),
                    max_backoff_seconds=min(10.0, window / 2),
                )
            except TRANSIENT as error:
                log.error(
                    "broker.unreachable",
                    broker=redact(self._url),
                    unreachableForSeconds=window,
                    error=f"{type(error).__name__}: {error}",
                )

    async def _maintain(self, establish: Establish) -> None:
        failures = 0
        lost_cause: str | None = None
        while not self._stopping:
            # A consumer on a link marked down (the heartbeat watch is closing it) counts as lost.
            if self._consumer_alive() and self._link_ready.is_set():
                self._set_consuming(True)
                self._wake.clear()
                self._wake_cause = "watchdog"  # unless a callback says otherwise before we wake
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._watchdog_interval)
                continue
            if self._consumer_channel is not None:
                lost_cause = self._wake_cause
                log.warning("consumer.lost", cause=lost_cause)
                self._consumer_tag = None
                self._consumer_channel = None
                self._set_consuming(False)
            if not self._link_ready.is_set():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._link_ready.wait(), timeout=self._watchdog_interval)
                continue
            self._restart_requested = False
            try:
                channels = await self._channels()
                underlay = cast(UnderlayChannel, await channels.consume.get_underlay_channel())
                tag = await establish(channels)
            except TRANSIENT as error:
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
                log.warning(
                    "consumer.start_failed",
                    attempt=failures,
                    retryInSeconds=round(delay, 2),
                    error=f"{type(error).__name__}: {error}",
                )
                if isinstance(error, TimeoutError):
                    await self._retire_channels()
                await asyncio.sleep(delay)
                continue
            if tag is None:
                return  # stopping
            failures = 0
            if self._restart_requested:
                # A restart was asked while this consumer was being attached (its first deliveries
                # can arrive before basic.consume returns): drop it and attach again, where the
                # restart's cause now says.
                log.warning("consumer.superseded", consumerTag=tag, cause=self._wake_cause)
                if not underlay.is_closed:
                    with contextlib.suppress(*TRANSIENT):
                        await asyncio.wait_for(underlay.basic_cancel(tag), timeout=self._operation_timeout)
                continue
            underlay.on_consumer_cancel_callbacks.add(self._on_consumer_cancelled)
            self._consumer_tag, self._consumer_channel = tag, underlay
            self._set_consuming(True)
            if lost_cause is not None:
                metrics.CONSUMER_RESTARTS.labels(cause=lost_cause).inc()
                lost_cause = None

    async def _retire_channels(self) -> None:
        """Close both channels so the next attempt opens new ones.

        A broker that does not answer on a channel may never answer on it again: RabbitMQ 3.10
        leaves a channel that first published to a stream while the stream's leader was restarting
        with the old leader, and nothing published on that channel is ever confirmed, while a new
        channel publishes at once. Retrying on the same channel would keep the instance from
        consuming until it is restarted."""
        channels = (self._consume_channel, self._publish_channel)
        self._consume_channel = self._publish_channel = None
        for channel in channels:
            if channel is not None:
                await self._close_for_good(channel)

    async def _close_for_good(self, channel: AbstractRobustChannel) -> None:
        """Close ``channel`` from our side, also one the broker closed, so aio-pika stops restoring
        it behind our back; bounded, and broker trouble meanwhile is no matter."""
        with contextlib.suppress(*TRANSIENT):
            await asyncio.wait_for(channel.close(), timeout=self._operation_timeout)

    async def _channels(self) -> LinkChannels:
        consume = self._consume_channel = await self._ensure_channel(self._consume_channel, confirms=False)
        publish = self._publish_channel = await self._ensure_channel(self._publish_channel, confirms=True)
        return LinkChannels(consume=consume, publish=publish)

    async def _ensure_channel(
        self, current: AbstractRobustChannel | None, *, confirms: bool
    ) -> AbstractRobustChannel:
        if current is not None and current.is_closed:
            # aio-pika reopens a robust channel the broker closed; give that a moment to finish.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(current.ready(), timeout=min(2.0, self._operation_timeout))
        if current is not None and not current.is_closed:
            return current
        if current is not None:
            await self._close_for_good(current)
        connection = self._connection
        if connection is None:
            raise ChannelInvalidStateError("not connected")
        channel = connection.channel(publisher_confirms=confirms, on_return_raises=confirms)
        await asyncio.wait_for(channel.initialize(), timeout=self._operation_timeout)
        channel.close_callbacks.add(self._on_channel_closed)
        if not confirms:
            # A stream consumer needs a per-consumer prefetch (RabbitMQ refuses one without it).
            await channel.set_qos(prefetch_count=self._prefetch, timeout=self._operation_timeout)
        return channel

    def _consumer_alive(self) -> bool:
        channel, tag = self._consumer_channel, self._consumer_tag
        return tag is not None and channel is not None and not channel.is_closed and tag in channel.consumers

    # --- the heartbeat watch ---------------------------------------------------------------------

    async def _watch_heartbeats(self) -> None:
        """Close the link when nothing has arrived from the broker for 2 × the heartbeat."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            underlay = self._open_underlay()
            watch = SilenceWatch.of(underlay) if underlay is not None else SilenceWatch(0, None)
            remaining = watch.remaining(loop.time())
            if underlay is None or remaining is None:  # not connected, or heartbeats off
                await asyncio.sleep(min(1.0, self._watchdog_interval))
            elif remaining > 0:
                await asyncio.sleep(remaining)
                # One turn for I/O that arrived while this task slept (a stalled loop must not
                # pass for a silent broker), then judge the same connection again.
                await asyncio.sleep(0)
            else:
                await self._close_silent(underlay, watch, silent_for=watch.silent_for(loop.time()))

    def _open_underlay(self) -> aiormq.abc.AbstractConnection | None:
        connection = self._connection
        transport = connection.transport if connection is not None else None
        underlay = transport.connection if transport is not None else None
        if underlay is None or underlay.is_closed or underlay is self._silenced:
            return None
        return underlay

    async def _close_silent(
        self, underlay: aiormq.abc.AbstractConnection, watch: SilenceWatch, *, silent_for: float
    ) -> None:
        log.warning(
            "broker.heartbeat_timeout",
            silentForSeconds=round(silent_for, 2),
            heartbeatSeconds=watch.heartbeat_seconds,
        )
        metrics.BROKER_LINK_LOSSES.labels(reason="heartbeat_timeout").inc()
        self._silenced = underlay
        self._set_link(up=False)
        self._set_consuming(False)
        self._poke("heartbeat_timeout")
        # aiormq sends Connection.Close and waits a moment for Close-Ok that will not come; aio-pika
        # then sees the connection closed and reconnects (the close callbacks below run as usual).
        error = BrokerSilentError(
            f"no frame from the broker for {silent_for:.1f} s (heartbeat {watch.heartbeat_seconds} s)"
        )
        try:
            await asyncio.wait_for(underlay.close(error), timeout=self._operation_timeout)
        except (*TRANSIENT, BrokerSilentError) as close_error:
            log.info("broker.close_failed", error=f"{type(close_error).__name__}: {close_error}")

    # --- stopping ------------------------------------------------------------------------------

    async def cancel_consumer(self, *, timeout: float) -> None:
        """Stop deliveries (before closing anything: a channel closed under an active consumer can take
        the whole connection down with it)."""
        self._stopping = True
        self._set_consuming(False)
        channel, tag = self._consume_channel, self._consumer_tag
        if channel is None or tag is None or not self._consumer_alive():
            return
        try:
            underlay = await asyncio.wait_for(channel.get_underlay_channel(), timeout=timeout)
            await asyncio.wait_for(underlay.basic_cancel(tag), timeout=timeout)
        except TRANSIENT as error:
            log.info("consumer.cancel_failed", error=f"{type(error).__name__}: {error}")

    async def close(self, *, timeout: float) -> None:
        self._stopping = True
        connection = self._connection
        if connection is not None and not connection.is_closed:
            try:
                await asyncio.wait_for(connection.close(), timeout=max(timeout, 0.1))
            except TRANSIENT as error:
                log.warning("broker.close_failed", error=f"{type(error).__name__}: {error}")
        self._set_link(up=False)
        self._set_consuming(False)

    # --- broker callbacks: record what happened, wake the loop --------------------------------

    def _on_connection_closed(self, _: object, error: BaseException | None) -> None:
        if self._stopping:
            return
        log.warning("broker.connection_lost", error=f"{type(error).__name__}: {error}")
        # Counted once per link that was up: a failed reconnect attempt also lands here, and a link
        # the heartbeat watch closed was marked down (and counted) already.
        if self._link_ready.is_set():
            metrics.BROKER_LINK_LOSSES.labels(reason="connection_closed").inc()
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
