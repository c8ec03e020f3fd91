"""Where an instance keeps the last position it delivered, so a restart knows what it missed.

One small durable queue per instance (``{POSITION_QUEUE_PREFIX}{INSTANCE_ID}``) holding one message
(``x-max-length: 1``, ``x-overflow: drop-head``: each save replaces the last). A restarted
instance reads it back: everything in the log after that position was published while it was away
and is delivered to its clients once they had ``CONSUME_GRACE_SECONDS`` to rejoin.

Rule: best effort and bounded. A lost save only means a restart treats a few more events as
already delivered or as backlog; it never blocks the consumer (each call is bounded by its timeout
and errors are logged).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import orjson
import structlog
from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractChannel, AbstractQueue
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from schemas.log import InvalidPositionError, Position

__all__ = ["PositionStore", "SavedPosition"]

log = structlog.get_logger(__name__)

_TRANSIENT: Final = (*CONNECTION_EXCEPTIONS, TimeoutError)


@dataclass(frozen=True, slots=True)
class SavedPosition:
    position: Position
    saved_at: float  # epoch seconds


class PositionStore:
    def __init__(self, queue_name: str, *, timeout: float) -> None:
        self._queue_name = queue_name
        self._timeout = timeout
        self._last_saved: Position | None = None

    async def load(self, queue: AbstractQueue) -> SavedPosition | None:
        """The position saved by this instance's previous run, if any (the message stays queued)."""
        try:
            message = await queue.get(no_ack=False, fail=False, timeout=self._timeout)
        except _TRANSIENT as error:
            log.warning("position.load_failed", error=f"{type(error).__name__}: {error}")
            return None
        if message is None:
            return None
        try:
            saved = _parse(message.body)
        finally:
            await message.reject(requeue=True)  # a classic or quorum queue: keep it for the next run
        if saved is None:
            log.warning("position.unreadable", queue=self._queue_name)
        else:
            self._last_saved = saved.position
        return saved

    async def save(self, channel: AbstractChannel, position: Position) -> None:
        if position == self._last_saved:
            return
        body = orjson.dumps({"position": str(position), "savedAt": time.time()})
        try:
            await channel.default_exchange.publish(
                Message(body, delivery_mode=DeliveryMode.PERSISTENT, content_type="application/json"),
                routing_key=self._queue_name,
                timeout=self._timeout,
            )
        except _TRANSIENT as error:
            log.info("position.save_failed", error=f"{type(error).__name__}: {error}")
            return
        self._last_saved = position


def _parse(body: bytes) -> SavedPosition | None:
    try:
        data = orjson.loads(body)
        return SavedPosition(Position.parse(str(data["position"])), float(data["savedAt"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidPositionError):
        return None
