"""The inbox: what the stream consumer is delivered, kept in stream order until the one worker takes it.

A module of its own because two parts hold it: ``consumers.attach`` registers ``Inbox.put`` as the
stream consumer's callback and asks ``last_arrival`` whether anything came since an attach;
``consumers.worker`` takes the messages out, one at a time.
"""

from __future__ import annotations

import asyncio

from consumers.amqp import DeliveredMessage

__all__ = ["Inbox"]


class Inbox:
    """Deliveries in arrival order; closed (``accepting`` False) once the consumer stops or fails."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[DeliveredMessage] = asyncio.Queue()
        self.accepting = False
        self.last_arrival = float("-inf")  # loop time of the last delivery

    async def put(self, message: DeliveredMessage) -> None:
        """The stream consumer's callback: only queues ``message`` (the worker handles it)."""
        # No await before put_nowait: callbacks start in delivery order, so the inbox keeps it.
        if self.accepting:
            self.last_arrival = asyncio.get_running_loop().time()
            self.messages.put_nowait(message)
