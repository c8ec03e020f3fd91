"""The benchmark's side of RabbitMQ: its exchanges, batched confirmed publishing, and cleanup.

Publishing goes through aiormq (aio-pika's protocol layer) on a channel with publisher confirms; a
batch is sent back to back and its confirms awaited together. Every event's ``jobId`` carries its
publish time (``bench.wire.job_id``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiormq
from pamqp import commands as spec

from bench.wire import event_body, job_id, now_us

__all__ = ["Broker", "PublishResult"]

_MAX_BATCH = 500


class PublishResult:
    def __init__(self) -> None:
        self.count = 0
        self.first_us = 0
        self.last_us = 0
        self.by_region: dict[str, int] = {}

    @property
    def seconds(self) -> float:
        return max(1e-9, (self.last_us - self.first_us) / 1e6)


class Broker:
    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self.server_version = "?"

    async def connect(self) -> None:
        self._connection = connection = await aiormq.connect(self.url)
        self._channel = await connection.channel(publisher_confirms=True)
        version = connection.server_properties.get("version", b"?")
        self.server_version = version.decode() if isinstance(version, bytes) else str(version)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = None

    @property
    def channel(self) -> aiormq.abc.AbstractChannel:
        assert self._channel is not None
        return self._channel

    async def declare_exchange(self, name: str) -> None:
        # The service declares its exchanges as durable topic exchanges; same here, or it would refuse.
        await self.channel.exchange_declare(name, exchange_type="topic", durable=True)

    async def cleanup(self, *, queues: Sequence[str] = (), exchanges: Sequence[str] = ()) -> None:
        assert self._connection is not None
        channel = await self._connection.channel()
        try:
            for queue in queues:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(queue)
            for exchange in exchanges:
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(exchange)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _publish(
        self, exchange: str, phase: int, indexes: range, region_of: Callable[[int], str]
    ) -> int:
        channel = self.channel
        timestamp = datetime.now(UTC)
        published = now_us()
        sends: list[Any] = []
        for index in indexes:
            region = region_of(index)
            job = job_id(published, phase, index)
            # As EventPublisher sends them: JSON, a message_id, a timestamp (not persistent: a benchmark).
            properties = spec.Basic.Properties(
                content_type="application/json", delivery_mode=1, message_id=job, timestamp=timestamp
            )
            sends.append(
                channel.basic_publish(
                    event_body(job, region),
                    exchange=exchange,
                    routing_key=f"recommendation.ready.{region}",
                    properties=properties,
                )
            )
        await asyncio.gather(*sends)
        return published

    async def publish_rate(
        self,
        exchange: str,
        phase: int,
        *,
        rate: float,
        duration: float,
        region_of: Callable[[int], str],
    ) -> PublishResult:
        """``rate`` events/s for ``duration`` s; a late batch is caught up by a bigger next one."""
        result = PublishResult()
        total = max(1, round(rate * duration))
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        while sent < total:
            due = min(total, int((loop.time() - started) * rate) + 1, sent + _MAX_BATCH)
            if due > sent:
                stamp = await self._publish(exchange, phase, range(sent, due), region_of)
                result.first_us = result.first_us or stamp
                result.last_us = stamp
                for index in range(sent, due):
                    region = region_of(index)
                    result.by_region[region] = result.by_region.get(region, 0) + 1
                sent = due
            else:
                await asyncio.sleep(max(0.0, started + sent / rate - loop.time()))
        result.count = sent
        return result

    async def publish_burst(
        self, exchange: str, phase: int, *, count: int, region_of: Callable[[int], str]
    ) -> PublishResult:
        """``count`` events as fast as confirms allow."""
        result = PublishResult()
        for begin in range(0, count, _MAX_BATCH):
            indexes = range(begin, min(count, begin + _MAX_BATCH))
            stamp = await self._publish(exchange, phase, indexes, region_of)
            result.first_us = result.first_us or stamp
            result.last_us = stamp
            for index in indexes:
                region = region_of(index)
                result.by_region[region] = result.by_region.get(region, 0) + 1
        result.count = count
        return result
