"""The soak's publisher: ``--rate`` events/s with confirms, each retried under its ``message_id`` until
confirmed, one in ``--invalid-every`` invalid; what it confirmed is what the count check owes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aio_pika
import orjson

from publisher import recommendation_ready


@dataclass
class Publisher:
    url: str
    exchange: str
    regions: list[str]
    valid: dict[str, str] = field(default_factory=dict)  # jobId -> region, confirmed
    confirmed_at: dict[str, float] = field(default_factory=dict)  # jobId -> monotonic time
    per_region: Counter[str] = field(default_factory=Counter)
    invalid: list[str] = field(default_factory=list)  # message ids, confirmed
    retries: int = 0
    returned: int = 0  # confirmed but routed to no queue (then retried)
    stopping: bool = False

    async def run(self, rate: float, invalid_every: int) -> None:
        connection = await aio_pika.connect_robust(self.url, reconnect_interval=1.0)
        try:
            # mandatory + on_return_raises: right after a broker restart the exchange can be up before
            # the stream is bound again; RabbitMQ then *confirms* a message it routed nowhere (and
            # returns it). Counted as published, such events were owed but never existed (run 2).
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            interval = 1.0 / rate
            next_at = time.monotonic()
            n = 0
            while not self.stopping:
                n += 1
                region = self.regions[n % len(self.regions)]
                message_id = str(uuid.uuid4())
                if invalid_every and n % invalid_every == 0:
                    body = orjson.dumps({"type": "RecommendationReady", "region": region})  # fields missing
                    await self._publish(channel, body, message_id)
                    self.invalid.append(message_id)
                else:
                    event = recommendation_ready(region=region, configVersion=n)
                    await self._publish(channel, orjson.dumps(event), message_id)
                    self.valid[str(event["jobId"])] = region
                    self.confirmed_at[str(event["jobId"])] = time.monotonic()
                    self.per_region[region] += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            await connection.close()

    async def _publish(self, channel: aio_pika.abc.AbstractChannel, body: bytes, message_id: str) -> None:
        """Until the broker confirms it; a retry keeps the ``message_id`` (the service drops repeats)."""
        while True:
            try:
                exchange = await channel.get_exchange(self.exchange, ensure=False)
                await exchange.publish(
                    aio_pika.Message(
                        body,
                        content_type="application/json",
                        message_id=message_id,
                        timestamp=datetime.now(UTC),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key="recommendation.ready",
                    mandatory=True,
                    timeout=5.0,
                )
                return
            except (
                aio_pika.exceptions.AMQPError,
                ConnectionError,
                OSError,
                TimeoutError,
                RuntimeError,
            ) as error:
                if isinstance(error, aio_pika.exceptions.DeliveryError):
                    self.returned += 1
                self.retries += 1
                await asyncio.sleep(0.5)
